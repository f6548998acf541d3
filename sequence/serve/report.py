"""A class session's report from its stored windows: report.csv (one row per window), report.png (each
student's expected level of every state over the session, the class's mean minute by minute, the
share of students at Engagement 0-1, faceless stretches shaded) and report.html (the figure and a
row per student). Served by `sequence serve` (/sessions/ID/report...) and written offline by
`sequence report`."""

from __future__ import annotations

import base64
import csv
import html
import io
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np

from embed.pyplot import pyplot

LOW = 1  # levels 0-1: "very low" and "low"
FOCUS = "Engagement"


def expected(entry: dict | None) -> float | None:
    """A state's expected level from its probabilities (None: no face in the window)."""
    return None if not entry else float(sum(k * p for k, p in enumerate(entry["probs"])))


def _minutes(session: dict, row: dict) -> float:
    """Minutes from the session's start to the window's middle."""
    return (row["source_started"] + (row["t_start"] + row["t_end"]) / 2 - session["started"]) / 60


def as_csv(session: dict, rows: list[dict], states: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["session", "source", "name", "minute", "t_start", "t_end", "face_fraction"]
        + [f"{s}_{c}" for s in states for c in ("level", "expected")]
    )
    for r in rows:
        cells = [
            session["name"],
            r["source"],
            r["name"],
            round(_minutes(session, r), 3),
            r["t_start"],
            r["t_end"],
            r["face_fraction"],
        ]
        for s in states:
            entry = (r["states"] or {}).get(s)
            e = expected(entry)
            cells += [entry["level"] if entry else "", "" if e is None else round(e, 3)]
        writer.writerow(cells)
    return buf.getvalue()


def class_by_minute(session: dict, rows: list[dict], states: list[str]) -> dict:
    """Per whole minute of the session: the class's mean expected level of each state and the share
    of students (with a face then) at Engagement 0-1."""
    per: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    low: dict[int, dict[str, bool]] = defaultdict(dict)
    for r in rows:
        minute = int(_minutes(session, r))
        for s in states:
            e = expected((r["states"] or {}).get(s))
            if e is not None:
                per[minute][s].append(e)
        entry = (r["states"] or {}).get(FOCUS)
        if entry:
            low[minute][r["source"]] = entry["level"] <= LOW
    minutes = sorted(per)
    return {
        "minute": minutes,
        "mean": {s: [float(np.mean(per[m][s])) if per[m][s] else None for m in minutes] for s in states},
        "low_share": [float(np.mean(list(low[m].values()))) if low[m] else None for m in minutes],
    }


def students(rows: list[dict], states: list[str]) -> list[dict]:
    """One row per student (by name): windows, minutes, mean expected levels, the share at
    Engagement 0-1 and the share without a face."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["name"]].append(r)
    out = []
    for name, own in by.items():
        faced = [r for r in own if (r["states"] or {}).get(states[0])]
        focus = [r["states"][FOCUS]["level"] <= LOW for r in faced if FOCUS in r["states"]]
        out.append(
            {
                "name": name,
                "windows": len(own),
                "minutes": round(sum(r["t_end"] - r["t_start"] for r in own) / 60, 1),
                **{
                    s: round(float(np.mean([expected(r["states"][s]) for r in faced])), 2) if faced else None for s in states
                },
                "engagement_low": round(float(np.mean(focus)), 2) if focus else None,
                "no_face": round(1 - len(faced) / len(own), 2),
            }
        )
    return out


def as_png(session: dict, rows: list[dict], states: list[str]) -> bytes:
    plt = pyplot()

    fig, axes = plt.subplots(len(states) + 1, 1, figsize=(11, 2.2 * (len(states) + 1)), sharex=True)
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["name"]].append(r)
    summary = class_by_minute(session, rows, states)
    for ax, s in zip(axes, states, strict=False):
        for name, own in by.items():
            t = [_minutes(session, r) for r in own]
            e = [expected((r["states"] or {}).get(s)) for r in own]
            ax.plot(t, [np.nan if v is None else v for v in e], lw=1, alpha=0.7, label=name)
            for r, v in zip(own, e, strict=True):
                if v is None:  # a faceless window, shaded
                    ax.axvspan(_minutes(session, r) - 0.5 / 60, _minutes(session, r) + 0.5 / 60, color="0.85", lw=0)
        means = [np.nan if v is None else v for v in summary["mean"][s]]
        ax.plot(np.array(summary["minute"]) + 0.5, means, color="black", lw=2.5, label="class, by minute")
        ax.set_ylim(-0.1, 3.1)
        ax.set_ylabel(f"{s}\n(expected level)")
    axes[0].legend(loc="upper right", fontsize=7, ncol=4)
    shares = [np.nan if v is None else v for v in summary["low_share"]]
    axes[-1].bar(np.array(summary["minute"]) + 0.5, shares, width=0.8, color="tab:red")
    axes[-1].set_ylim(0, 1)
    axes[-1].set_ylabel(f"share at\n{FOCUS} 0-1")
    axes[-1].set_xlabel("minutes from the session's start")
    fig.suptitle(f"session {session['name']}: {len(by)} students, {len(rows)} windows")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()


def as_html(session: dict, rows: list[dict], states: list[str], png: bytes) -> str:
    started = datetime.fromtimestamp(session["started"]).strftime("%Y-%m-%d %H:%M")
    head = "".join(
        f"<th>{html.escape(c)}</th>" for c in ["student", "windows", "minutes", *states, f"{FOCUS} 0-1", "no face"]
    )
    body = ""
    for row in students(rows, states):
        cells = [
            row["name"],
            row["windows"],
            row["minutes"],
            *(row[s] for s in states),
            row["engagement_low"],
            row["no_face"],
        ]
        body += "<tr>" + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in cells) + "</tr>\n"
    image = base64.b64encode(png).decode()
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Session {html.escape(session['name'])}</title>"
        "<style>body{font-family:sans-serif;margin:2rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>"
        f"<h1>Session {html.escape(session['name'])}</h1><p>started {started}; expected levels are 0 (very low) "
        f"to 3 (very high); shaded: no face in the window.</p>"
        f"<img id='report' alt='the session, minute by minute' src='data:image/png;base64,{image}'>"
        f"<table id='students'><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"
        "<p><a href='report.csv'>report.csv</a> (one row per window)</p></body></html>"
    )


def write_report(session: dict, rows: list[dict], states: list[str], out: Path) -> dict:
    """report.csv, report.png and report.html in `out`; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    png = as_png(session, rows, states)
    (out / "report.csv").write_text(as_csv(session, rows, states))
    (out / "report.png").write_bytes(png)
    (out / "report.html").write_text(as_html(session, rows, states, png=png))
    return {"csv": str(out / "report.csv"), "png": str(out / "report.png"), "html": str(out / "report.html")}


def report_from_db(db: str, session: str, out: Path) -> dict:
    """`sequence report`: a session's report files from a history database (a SQLite file or a URL),
    with no server running. {"session", "windows", "students", "csv", "png", "html"}."""
    from embed.errors import ConfigError
    from sequence.serve.history import History

    history = History(db, None, retain_days=float("inf"), record=False)
    try:
        found, rows = history.session_windows(int(session) if session.isdigit() else session)
    except KeyError:
        names = ", ".join(s["name"] for s in history.sessions()) or "none"
        raise ConfigError(f"--session {session}: not in {db} (its sessions: {names}); fix: name one of those") from None
    finally:
        history.close()
    states = list(next((r["states"] for r in rows if r["states"]), {}))
    paths = write_report(found, rows, states, out=out)
    return {"session": found["name"], "windows": len(rows), "students": len({r["name"] for r in rows}), **paths}
