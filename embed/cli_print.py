"""How stage one's commands show their results: rich tables on stderr, one result on stdout."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from embed.console import err
from embed.run_report import RunReport


def print_run(report: RunReport, as_json: bool = False) -> None:
    """`embed run`'s summary (stderr) and its stores or its JSON (stdout)."""
    t = Table(title="stage one summary", show_header=False)
    for path, identity in zip(report.stores, report.weights, strict=True):
        t.add_row("store", str(path))
        t.add_row(
            "weights",
            identity + ("  [bold yellow](RANDOM: no pretrained knowledge)[/]" if identity.startswith("random") else ""),
        )
    t.add_row(
        "clips",
        f"{report.total} ({report.embedded} embedded now, {report.skipped} already complete, {len(report.failures)} failed)",
    )
    t.add_row(
        "faces",
        f"detected in {report.detected} clips, read from the face-track cache for "
        f"{report.embedded + len(report.failures) - report.detected}",
    )
    rate = report.frames / report.seconds if report.seconds else 0.0
    t.add_row(
        "frames",
        f"{report.frames} in {report.seconds:.1f} s ({rate:.1f} frames/s, "
        f"{report.embedded / report.seconds if report.seconds else 0:.2f} clips/s)",
    )
    if report.clips_in_flight > 1:
        t.add_row("in flight", f"{report.clips_in_flight} clips at a time, their network calls batched together")
    if report.resumed_frames:
        t.add_row("resumed", f"{report.resumed_frames} frames of part-written clips kept from an earlier run")
    if report.truncated:
        t.add_row("truncated", f"{len(report.truncated)} kept though cut short: {', '.join(report.truncated[:10])}")
    if report.dashboard:
        t.add_row("dask", report.dashboard)
    err.print(t)
    for f in report.failures:
        err.print(f"[red]failed[/] {f['clip']}: {f['error']}", highlight=False, soft_wrap=True)
    if report.interrupted:
        err.print("[yellow]interrupted: complete clips are kept; rerun to continue[/]")
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    for path in report.stores:
        print(f"cache: {path}")


def print_info(out: dict) -> None:
    t = Table(title=f"{out['dataset']} / {out['backbone']}", show_header=False)
    for k, v in out.items():
        if k == "dataset":
            continue
        if isinstance(v, dict):
            v = f"{len(v)}" + (f": {', '.join(f'{c} ({n} frames written)' for c, n in list(v.items())[:10])}" if v else "")
        elif isinstance(v, list):
            v = f"{len(v)}" + (f": {', '.join(x['clip'] if isinstance(x, dict) else x for x in v[:10])}" if v else "")
        t.add_row(k, str(v))
    Console().print(t)


def print_verify(out: dict) -> None:
    for b in out["broken"]:
        err.print(f"[red]broken[/] {b['clip']}: {b['problem']}", highlight=False, soft_wrap=True)
    leftovers = len(out["partial_files"])
    err.print(
        f"{out['store']}: {out['checked']} complete clips checked, {len(out['broken'])} broken, "
        f"{out['repaired']} reset to pending"
        + ("; rerun `embed run` to redo them" if out["repaired"] else "")
        + (
            f"; {leftovers} unfinished zarr write(s) of a killed process "
            + (
                f"removed ({out['removed_partial_files']})"
                if out["removed_partial_files"]
                else "left (--repair removes them)"
            )
            if leftovers
            else ""
        ),
        highlight=False,
        soft_wrap=True,
    )


def print_stores(rows: list[dict], cache_path: str) -> None:
    t = Table(title=f"stores under {cache_path}")
    for col in ("dataset", "backbone", "key", "weights", "made by", "complete", "failed", "frames", "MB"):
        t.add_column(col)
    for r in rows:
        c = r["config"]
        t.add_row(
            r["dataset"],
            str(c.get("backbone", "-")),
            r["key"],
            str(c.get("weights", "-")),
            _made_by(c),
            str(r["complete"]),
            str(r["failed"]),
            str(r["frames"]),
            f"{r['bytes'] / 1e6:.1f}",
        )
    Console().print(t)


def _made_by(config: dict) -> str:
    """What wrote a store: the face detector's schedule for stage one's own stores, else its importer;
    a store needs neither to be listed."""
    if det := config.get("detector"):
        return f"MTCNN every {det.get('detect_every')} @ {det.get('detect_width')}px"
    return f"import: {config['importer']}" if config.get("importer") else "-"


def print_import(out: dict) -> None:
    t = Table(title="import summary", show_header=False)
    t.add_row("store", str(out["store"]))
    t.add_row(
        "features",
        f"{out['dim']} per frame: {', '.join(out['columns'][:8])}"
        + (f" ... ({len(out['columns'])} columns)" if len(out["columns"]) > 8 else ""),
    )
    if out["dropped_columns"]:
        t.add_row(
            "left out", f"{len(out['dropped_columns'])} columns not in every file: {', '.join(out['dropped_columns'][:6])}"
        )
    t.add_row(
        "clips",
        f"{out['complete']} complete ({out['imported']} imported now, {out['skipped']} unchanged, {out['failed']} failed)",
    )
    t.add_row(
        "unmatched",
        f"{len(out['unmatched_files'])} files match no clip"
        + (f" (first: {out['unmatched_files'][0]})" if out["unmatched_files"] else ""),
    )
    t.add_row(
        "missing",
        f"{len(out['missing_clips'])} clips have no file"
        + (f" (first: {out['missing_clips'][0]})" if out["missing_clips"] else ""),
    )
    err.print(t)
    for f in out["failures"]:
        err.print(f"[red]failed[/] {f['clip']}: {f['error']}", highlight=False, soft_wrap=True)


def print_expressions(result: dict) -> None:
    t = Table(title=f"expressions of {result['video']}", show_header=False)
    t.add_row("weights", result["weights"])
    t.add_row("frames", f"{result['frames']} ({result['faces']} with a face)")
    t.add_row("mean", ", ".join(f"{k} {v:.2f}" for k, v in sorted(result["mean"].items(), key=lambda kv: -kv[1])))
    t.add_row("files", f"{result['csv']}\n{result['png']}")
    err.print(t)
