"""How stage two's commands show their results: rich tables on stderr (wide enough for their columns
when stderr is not a terminal: logs, CI), one result on stdout."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from embed.console import err
from sequence.runs import cell, to_csv, to_markdown


def _with_ci(m: dict, key: str) -> str:
    ci = (m.get("ci") or {}).get(key)
    return f"{m[key]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _state_table(result: dict, states: list[str]) -> Table:
    unit = next((m.get("ci_by") for m in result["test"].values() if m.get("ci_by")), None)
    caption = (
        (
            f"[low, high]: 95 % bootstrap intervals, resampling test {unit}s; balanced accuracy, QWK and MCC "
            f"of always answering the majority level: 0.25 (or 1/levels present), 0, 0"
        )
        if unit
        else None
    )
    t = Table(title=f"test metrics — {Path(result['run']).name}", caption=caption)
    for col in ("state", "accuracy", "majority", "Δ points", "macro-F1", "balanced acc", "QWK", "MCC", "F1 per level"):
        t.add_column(col, justify="right" if col != "state" else "left")
    for s in states:
        m = result["test"].get(s)
        if not m:
            continue
        t.add_row(
            s,
            _with_ci(m, "accuracy"),
            f"{m['majority_accuracy']:.3f}",
            f"{100 * (m['accuracy'] - m['majority_accuracy']):+.1f}",
            _with_ci(m, "macro_f1"),
            _with_ci(m, "balanced_accuracy"),
            _with_ci(m, "qwk"),
            _with_ci(m, "mcc"),
            "/".join(f"{v:.2f}" for v in m["per_level_f1"]),
        )
    return t


def print_state_table(result: dict, states: list[str]) -> None:
    # Wide enough for the columns even when stderr is not a terminal (logs, CI).
    Console(stderr=True, width=max(err.width, 170)).print(_state_table(result, states))


def print_aggregate(out: dict, states: list[str]) -> None:
    agg = out["aggregate"]["test"]
    t = Table(title=f"test metrics over {len(out['runs'])} seeds (mean ± sd)")
    for col in ("state", "accuracy", "majority", "macro-F1", "balanced acc", "QWK", "MCC"):
        t.add_column(col, justify="right" if col != "state" else "left")
    for s in states:
        if s not in agg:
            continue
        a = agg[s]
        cell = {k: f"{a[k]['mean']:.3f} ± {a[k]['sd']:.3f}" for k in a}
        t.add_row(
            s,
            cell["accuracy"],
            f"{out['results'][0]['test'][s]['majority_accuracy']:.3f}",
            cell["macro_f1"],
            cell["balanced_accuracy"],
            cell["qwk"],
            cell["mcc"],
        )
    Console(stderr=True, width=max(err.width, 130)).print(t)
    for run in out["runs"]:
        err.print(f"run folder: {run}", highlight=False, soft_wrap=True)


def print_cv(out: dict, states: list[str]) -> None:
    """The folds' validation figures (mean [95 % interval]) beside the majority baseline, then the
    final model's test figures."""
    k = len(out["folds"])
    t = Table(
        title=f"validation over {k} subject-wise folds: mean [95 % t-interval over folds]",
        caption=f"final model: {out['epochs']} epochs on Train and Validation together; its test figures below",
    )
    for col in ("state", "accuracy", "majority", "macro-F1", "balanced acc", "QWK", "MCC"):
        t.add_column(col, justify="right" if col != "state" else "left")

    def span(f: dict) -> str:
        return f"{f['mean']:.3f} [{f['low']:.2f}, {f['high']:.2f}]"

    for s in states:
        m = out["summary"][s]
        t.add_row(
            s,
            span(m["accuracy"]),
            f"{m['majority_accuracy']['mean']:.3f}",
            span(m["macro_f1"]),
            span(m["balanced_accuracy"]),
            span(m["qwk"]),
            span(m["mcc"]),
        )
    Console(stderr=True, width=max(err.width, 170)).print(t)
    for f in out["folds"]:
        err.print(f"fold {f['fold']}: {f['run']}", highlight=False, soft_wrap=True)
    print_state_table(out["final"], states)
    err.print(f"final model: {out['final']['run']}", highlight=False, soft_wrap=True)


def print_top_trials(out: dict) -> None:
    """The study's best trials by validation macro-F1, with what this call did."""
    done = out["trials"]
    pruned = sum(1 for t in done if t.get("pruned"))
    failed = sum(1 for t in done if "error" in t)
    t = Table(
        title=f"study '{out['study']}': top trials by validation macro-F1 (mean over states)",
        caption=f"this call: {len(done)} trials ({pruned} pruned, {failed} failed)"
        + (f"; trials {out['retried']} were cut off and ran again" if out["retried"] else ""),
    )
    if not out["top"]:
        return
    cols = [c for c in out["top"][0] if c not in ("state", "runs")]
    for col in cols:
        t.add_column(col, justify="right" if col in ("trial", "value", "seconds") else "left")
    for row in out["top"]:
        t.add_row(*[f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in cols])
    Console(stderr=True, width=max(err.width, 170)).print(t)


def print_rows(rows: list[dict], *, fmt: str, title: str, states: list[str]) -> None:
    """The comparison table as `fmt` says: table (the terminal), markdown, csv or json (stdout)."""
    if fmt == "json":
        print(json.dumps(rows))
    elif fmt == "markdown":
        print(to_markdown(rows))
    elif fmt == "csv":
        print(to_csv(rows), end="")
    else:
        # The terminal view folds each state's three columns into one; CSV/Markdown/JSON keep them all.
        t = Table(title=title + "; per state: accuracy (majority) macro-F1 QWK; mean ± sd over seeds")
        keep = ["run", "seeds", "backbone", "train clips", "frames", "deltas", "batch", "epochs", "head", "loss"]
        for col in [*keep, *states]:
            t.add_column(col, overflow="fold")

        for r in rows:
            cells = [str(r[c]) for c in keep]
            cells += [
                f"{cell(r[s[0] + ' acc'], 2)} ({cell(r[s[0] + ' maj'], 2)}) {cell(r[s[0] + ' F1'], 2)} "
                f"{cell(r[s[0] + ' QWK'], 2)}"
                if r[s[0] + " acc"] != ""
                else "-"
                for s in states
            ]
            t.add_row(*cells)
        Console(width=max(Console().width, 160)).print(t)


def _difference_cells(f: dict) -> list[str]:
    """A, B, B - A with its interval, and the verdict, as both compare tables print them."""
    return [
        f"{f['a']:.3f}",
        f"{f['b']:.3f}",
        f"{f['difference']:+.3f} [{f['ci'][0]:+.3f}, {f['ci'][1]:+.3f}]",
        "beyond chance" if f["exceeds"] else "within chance",
    ]


def print_compare(out: dict) -> None:
    t = Table(
        title=f"B vs A on {out['clips']} test clips (A: {len(out['a'])} run(s), B: {len(out['b'])} run(s))",
        caption=out["method"],
    )
    for col in ("state", "figure", "A", "B", "B - A [95 %]", "verdict"):
        t.add_column(col, justify="left" if col in ("state", "figure", "verdict") else "right")
    for state, figs in out["states"].items():
        for k, (name, f) in enumerate(figs.items()):
            t.add_row(state if k == 0 else "", name, *_difference_cells(f))
    Console(stderr=True, width=max(err.width, 120)).print(t)


def print_compare_grids(out: dict, title: str) -> None:
    t = Table(title=title)
    for col in ("exp", "state", "figure", "A", "B", "B - A [95 %]", "verdict"):
        t.add_column(col, justify="left" if col in ("state", "figure", "verdict") else "right")
    for k, cmp in out["experiments"].items():
        for state, figs in cmp["states"].items():
            for name in ("accuracy", "macro_f1"):
                t.add_row(str(k), state, name, *_difference_cells(figs[name]))
    Console(stderr=True, width=max(err.width, 130)).print(t)


def print_prediction(result: dict, video: str) -> None:
    t = Table(title=f"{Path(video).name}: {result['windows']} window(s) of {result['window_seconds']:.1f} s")
    for col in ("state", "level", "p(0)", "p(1)", "p(2)", "p(3)"):
        t.add_column(col)
    for s, v in result["states"].items():
        t.add_row(s, str(v["level"]), *(f"{p:.2f}" for p in v["probs"]))
    err.print(t)
    if result["timeline"]:
        err.print(f"timeline: {result['timeline_png']}", highlight=False, soft_wrap=True)


def print_live(summary: dict, video: str) -> None:
    t = Table(title=f"live: {video}", show_header=False)
    t.add_row("windows", f"{summary['windows']} ({summary['scored']} scored, the rest without enough face)")
    t.add_row("frames", f"{summary['frames']} embedded, {summary['dropped']} dropped to keep up")
    t.add_row("latency", f"median {summary['latency']['median_s']} s, worst {summary['latency']['worst_s']} s")
    t.add_row("ended", summary["ended"])
    if summary.get("timeline_png"):
        t.add_row("timeline", summary["timeline_png"])
    err.print(t)
