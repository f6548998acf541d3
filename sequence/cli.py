"""`python -m sequence`: typer CLI for stage two. Parses options and calls the library; no logic here."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from embed.console import err, fail, run_app, setup_logging
from embed.errors import ClipError, ConfigError
from sequence.config import default as _setting


def _default(name: str) -> str:
    return f"[default: {_setting(name)}]"


# rich_markup_mode=None: help texts say [default: ...] and random[:seed], which rich markup would eat.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Stage two of affectseq: sequence heads on cached embeddings; metrics, runs, predict.",
)
log = logging.getLogger("sequence")

ManifestOpt = Annotated[Path, typer.Option("--manifest", "-m", help="Data manifest (YAML).")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset [default: the manifest's].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object, last on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info logs.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")]


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


def _print_state_table(result: dict, states: list[str]) -> None:
    # Wide enough for the columns even when stderr is not a terminal (logs, CI).
    Console(stderr=True, width=max(err.width, 170)).print(_state_table(result, states))


def _print_aggregate(out: dict, states: list[str]) -> None:
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


@app.command()
def train(
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    config: Annotated[Path | None, typer.Option(help="YAML of settings (as in a grid's base); options override it.")] = None,
    dataset: DatasetOpt = None,
    backbone: Annotated[str | None, typer.Option("--backbone", "-b", help="Backbone whose cache to train on.")] = None,
    weights: Annotated[
        str | None, typer.Option("--weights", "-w", help="Pick the store by weights, as on `embed run`.")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Pick the store by key (prefix).")] = None,
    head: Annotated[str | None, typer.Option(help=f"Head: lstm, gru, fc, tcn or transformer {_default('head')}.")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Head parameter key=value (lists comma-separated), repeatable.")
    ] = None,
    frames: Annotated[
        int | None, typer.Option(help=f"Frames per clip, uniform over time; 0: all {_default('frames')}.")
    ] = None,
    stride: Annotated[int | None, typer.Option(help="Keep every k-th face frame first.")] = None,
    train_clips: Annotated[int | None, typer.Option(help="Seeded random subset of Train [all].")] = None,
    loss: Annotated[str | None, typer.Option(help=f"weighted_ce, ce, focal or ordinal {_default('loss')}.")] = None,
    sampler: Annotated[str | None, typer.Option(help="shuffle or weighted (class-balanced draws).")] = None,
    epochs: Annotated[int | None, typer.Option(help=f"Most epochs {_default('epochs')}.")] = None,
    batch: Annotated[int | None, typer.Option(help=f"Batch size {_default('batch')}.")] = None,
    lr: Annotated[float | None, typer.Option(help=f"AdamW learning rate {_default('lr')}.")] = None,
    patience: Annotated[int | None, typer.Option(help=f"Early-stopping patience in epochs {_default('patience')}.")] = None,
    select: Annotated[
        str | None,
        typer.Option(help="Validation score: macro_f1, accuracy or loss; last: keep the final epoch, no early stop."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help=f"Seed for init, subset and batch order {_default('seed')}.")] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Run once per seed (comma-separated, e.g. 0,1,2); figures are then given as mean ± sd over the runs."
        ),
    ] = None,
    device: DeviceOpt = None,
    stream: Annotated[
        bool | None,
        typer.Option(
            "--stream/--no-stream",
            help="Read embeddings from the cache batch by batch [only when the splits would not fit in memory].",
        ),
    ] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a head on Train, select by Validation, report on Test; write a run folder."""
    setup_logging(quiet)
    try:
        from embed.manifest import load_manifest
        from sequence.config import config_from_options, parse_seeds
        from sequence.experiment import train_run

        m = load_manifest(manifest)
        options = {
            "dataset": dataset,
            "backbone": backbone,
            "weights": weights,
            "key": key,
            "head": head,
            "frames": frames,
            "stride": stride,
            "train_clips": train_clips,
            "loss": loss,
            "sampler": sampler,
            "epochs": epochs,
            "batch": batch,
            "lr": lr,
            "patience": patience,
            "select": select,
            "seed": seed,
            "device": device,
            "stream": stream,
        }
        cfg = config_from_options(config, options, param)
        if seeds is not None:
            from sequence.experiment import train_seeds

            seed_list = parse_seeds(seeds, seed)
            out = train_seeds(m, cfg, seed_list, progress=not quiet)
        else:
            result = train_run(m, cfg, progress=not quiet)
    except ConfigError as e:
        fail(str(e))
    if seeds is not None:
        _print_aggregate(out, m.states)
        print(json.dumps({"runs": out["runs"], "aggregate": out["aggregate"]}) if as_json else "\n".join(out["runs"]))
        return
    _print_state_table(result, m.states)
    err.print(f"run folder: {result['run']}", highlight=False, soft_wrap=True)
    print(json.dumps(result) if as_json else result["run"])


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A finished run folder.")],
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    device: DeviceOpt = None,
    by_subject: Annotated[
        bool,
        typer.Option(
            "--by-subject", help="Also write each test subject's accuracy and macro-F1 (by_subject.csv, by_subject.png)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-evaluate a run from its folder and the cache (e.g. after fixing labels)."""
    setup_logging(quiet=True)
    try:
        from embed.manifest import load_manifest
        from sequence.experiment import evaluate_run

        m = load_manifest(manifest)
        result = evaluate_run(run, m, device or "auto", by_subject)
    except ConfigError as e:
        fail(str(e))
    _print_state_table(result, m.states)
    if by_subject:
        err.print(
            f"per subject ({result['subjects']}): {result['by_subject_csv']}, {result['by_subject_png']}",
            highlight=False,
            soft_wrap=True,
        )
    print(json.dumps(result) if as_json else result["run"])


def _input_options(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--input-option {pair!r}: not KEY=VALUE; fix: e.g. --input-option video_size=640x480")
        out[key] = value
    return out


@app.command()
def predict(
    video: Annotated[
        str,
        typer.Argument(
            help="A video file, a URL PyAV opens (rtsp://, http(s)://, udp://...), "
            "a capture device (/dev/video0 with --input-format v4l2), or - for "
            "a container stream on standard input."
        ),
    ],
    run: Annotated[Path, typer.Option("--run", "-r", help="A finished run folder.")],
    weights: Annotated[str | None, typer.Option(help="Backbone weights, if the run's cannot be found.")] = None,
    window: Annotated[float | None, typer.Option(help="Window in seconds [the run's training clip length].")] = None,
    hop: Annotated[float, typer.Option(help="Seconds between window starts.")] = 1.0,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="One JSON line per window on stdout as soon as the window "
            "has its last frame; frames are skipped rather than queued "
            "when the input comes faster than the pipeline.",
        ),
    ] = False,
    smooth: Annotated[
        float,
        typer.Option(
            help="With --live: seconds of exponential smoothing of the "
            "probabilities for the display and a 'smoothed' key (the raw "
            "values are always written) [0: off]."
        ),
    ] = 0.0,
    sample_fps: Annotated[
        float | None,
        typer.Option(help="With --live: frames per second kept from the stream [the run's frame rate]."),
    ] = None,
    min_face_fraction: Annotated[
        float | None,
        typer.Option(help="Windows with fewer face frames than this share are not scored (null states) [default: 0.5]."),
    ] = None,
    input_format: Annotated[str | None, typer.Option(help="PyAV/FFmpeg input format (v4l2, mpegts, ...).")] = None,
    input_option: Annotated[
        list[str] | None,
        typer.Option(help="PyAV/FFmpeg input option KEY=VALUE (video_size=640x480, framerate=30, ...); repeatable."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for the timeline [RUN/predictions/VIDEO].")] = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each state's level and probabilities for a video; a timeline (CSV, JSON, PNG) if it is long.
    With --live, one JSON line per window while the stream goes on."""
    setup_logging(quiet=True)
    if live:
        _predict_live(
            video,
            run,
            weights,
            device,
            window,
            hop,
            smooth,
            min_face_fraction,
            input_format,
            input_option,
            out,
            as_json,
            sample_fps,
        )
        return
    try:
        from sequence.predict import predict_video
        from sequence.run import Run

        result = predict_video(
            video,
            Run.open(run),
            weights,
            device or "auto",
            window,
            hop,
            out,
            min_face_fraction,
            input_format,
            _input_options(input_option),
        )
    except (ConfigError, ClipError) as e:
        fail(str(e))
    t = Table(title=f"{Path(video).name}: {result['windows']} window(s) of {result['window_seconds']:.1f} s")
    for col in ("state", "level", "p(0)", "p(1)", "p(2)", "p(3)"):
        t.add_column(col)
    for s, v in result["states"].items():
        t.add_row(s, str(v["level"]), *(f"{p:.2f}" for p in v["probs"]))
    err.print(t)
    if result["timeline"]:
        err.print(f"timeline: {result['timeline_png']}", highlight=False, soft_wrap=True)
    print(json.dumps(result) if as_json else json.dumps(result["states"]))


def _predict_live(
    video, run, weights, device, window, hop, smooth, min_face_fraction, input_format, input_option, out, as_json, sample_fps
) -> None:
    try:
        from sequence.live import is_terminal, predict_live, status_printer
        from sequence.run import Run

        report = predict_live(
            video,
            Run.open(run),
            weights,
            device or "auto",
            window,
            hop,
            smooth,
            out,
            min_face_fraction,
            input_format,
            _input_options(input_option),
            status=status_printer(err) if is_terminal() else None,
            sample_fps=sample_fps,
        )
    except (ConfigError, ClipError) as e:
        fail(str(e))
    summary = report.as_dict()
    t = Table(title=f"live: {video}", show_header=False)
    t.add_row("windows", f"{summary['windows']} ({summary['scored']} scored, the rest without enough face)")
    t.add_row("frames", f"{summary['frames']} embedded, {summary['dropped']} dropped to keep up")
    t.add_row("latency", f"median {summary['latency']['median_s']} s, worst {summary['latency']['worst_s']} s")
    t.add_row("ended", summary["ended"])
    if summary.get("timeline_png"):
        t.add_row("timeline", summary["timeline_png"])
    err.print(t)
    if as_json:
        print(json.dumps({"summary": summary}))


@app.command()
def serve(
    run: Annotated[Path, typer.Option("--run", "-r", help="A finished run folder.")],
    host: Annotated[str, typer.Option(help="Address to listen on; any but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free one, printed).")] = 8765,
    token: Annotated[str | None, typer.Option(help="Token every request must carry (16+ characters).")] = None,
    token_file: Annotated[Path | None, typer.Option(help="A file holding the token (kept out of `ps`).")] = None,
    max_sources: Annotated[int, typer.Option(help="Sources watched at once; more are refused.")] = 32,
    sample_fps: Annotated[
        float | None,
        typer.Option(help="Frames per second kept from every source [the run's frame rate]; 5 is plenty for a class."),
    ] = None,
    window: Annotated[float | None, typer.Option(help="Window in seconds [the run's training clip length].")] = None,
    hop: Annotated[float, typer.Option(help="Seconds between window starts.")] = 1.0,
    smooth: Annotated[float, typer.Option(help="Seconds of exponential smoothing in a 'smoothed' key [0: off].")] = 0.0,
    min_face_fraction: Annotated[
        float | None, typer.Option(help="Windows with fewer face frames than this share are not scored [0.5].")
    ] = None,
    weights: Annotated[str | None, typer.Option(help="Backbone weights, if the run's cannot be found.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: serve HTTPS (with --tls-key).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    device: DeviceOpt = None,
) -> None:
    """Watch many sources at once (students' cameras, streams, pushed uploads) with one model, and show
    their states live on a web page at / (a student's own page at /student). Ctrl-C stops it."""
    setup_logging(quiet=True)
    try:
        from sequence.serve.server import read_token
        from sequence.serve.server import serve as run_server

        run_server(
            run,
            host,
            port,
            read_token(token, token_file),
            max_sources,
            sample_fps,
            device or "auto",
            weights,
            window,
            hop,
            smooth,
            min_face_fraction,
            _tls(tls_cert, tls_key),
        )
    except (ConfigError, ClipError) as e:
        fail(str(e))


def _tls(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert and --tls-key go together; fix: pass both PEM files, or neither")
    return (cert, key) if cert and key else None


def _print_rows(rows: list[dict], markdown: bool, as_csv: bool, as_json: bool, title: str, states: list[str]) -> None:
    from sequence.runs import cell, to_csv, to_markdown

    if as_json:
        print(json.dumps(rows))
    elif markdown:
        print(to_markdown(rows))
    elif as_csv:
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


@app.command()
def runs(
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Only this dataset's runs [all].")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="A Markdown table.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The comparison table of every finished run (test accuracy and macro-F1 beside the majority rate)."""
    setup_logging(quiet=True)
    try:
        from embed.manifest import load_manifest
        from sequence.runs import comparison_rows, list_runs

        m = load_manifest(manifest)
    except ConfigError as e:
        fail(str(e))
    found, partial = list_runs(m.runs_path, dataset or "*")
    for p in partial:
        log.warning("%s: unfinished run (killed or still running); not listed", p)
    _print_rows(
        comparison_rows(found, m.states),
        markdown,
        as_csv,
        as_json,
        f"{len(found)} runs under {m.runs_path} (test split; epochs = best/trained/max)",
        m.states,
    )


def _difference_cells(f: dict) -> list[str]:
    """A, B, B - A with its interval, and the verdict, as both compare tables print them."""
    return [
        f"{f['a']:.3f}",
        f"{f['b']:.3f}",
        f"{f['difference']:+.3f} [{f['ci'][0]:+.3f}, {f['ci'][1]:+.3f}]",
        "beyond chance" if f["exceeds"] else "within chance",
    ]


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(help="Run A: a run folder or a run name from `sequence runs`.")],
    run_b: Annotated[str, typer.Argument(help="Run B, compared against A.")],
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Per state, whether B differs from A by more than seeds and resampling explain. Each run stands
    for its row in `sequence runs`: with the runs that differ from it only by seed."""
    setup_logging(quiet=True)
    try:
        from embed.manifest import load_manifest
        from sequence.compare import compare_runs

        m = load_manifest(manifest)
        out = compare_runs(Path(run_a), Path(run_b), m.states, m.levels, m.runs_path)
    except ConfigError as e:
        fail(str(e))
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
    if as_json:
        print(json.dumps(out))


@app.command("compare-grids")
def compare_grids(
    grid_a: Annotated[Path, typer.Argument(help="Grid A (its runs as `sequence experiments` recorded them).")],
    grid_b: Annotated[Path, typer.Argument(help="Grid B, row by row against A.")],
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    dataset: DatasetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each experiment both grids ran, B against A: per state the paired difference of accuracy and
    macro-F1 with its 95 % interval (all figures with --json), as `sequence compare` does for two runs."""
    setup_logging(quiet=True)
    try:
        from embed.manifest import load_manifest
        from sequence.compare import compare_grids as compare
        from sequence.experiment import grid_record

        m = load_manifest(manifest)
        out = compare(grid_record(m, dataset, grid_a), grid_record(m, dataset, grid_b), m.states, m.levels, m.runs_path)
    except ConfigError as e:
        fail(str(e))
    t = Table(title=f"{grid_b.name} against {grid_a.name}, experiment by experiment (test split)")
    for col in ("exp", "state", "figure", "A", "B", "B - A [95 %]", "verdict"):
        t.add_column(col, justify="left" if col in ("state", "figure", "verdict") else "right")
    for k, cmp in out["experiments"].items():
        for state, figs in cmp["states"].items():
            for name in ("accuracy", "macro_f1"):
                t.add_row(str(k), state, name, *_difference_cells(figs[name]))
    Console(stderr=True, width=max(err.width, 130)).print(t)
    if as_json:
        print(json.dumps(out))


@app.command()
def experiments(
    grid: Annotated[Path, typer.Argument(help="A grid YAML (see configs/).")],
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Run on this dataset [the grid's].")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the table as Markdown.")] = False,
    reference: Annotated[
        str | None,
        typer.Option(
            help="Also set each experiment beside published figures (sequence/reference/NAME.yaml, e.g. study): "
            "table, reference.csv, reference.json and reference.png in the runs folder."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Run the configurations on a local dask cluster of N worker processes.")
    ] = None,
    scheduler: Annotated[str | None, typer.Option(help="Run them on this dask scheduler (tcp://HOST:PORT).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run every configuration of a grid over the cache, then print their comparison table."""
    setup_logging(quiet)
    try:
        from embed.manifest import load_manifest
        from sequence.experiment import run_grid
        from sequence.runs import comparison_rows, load_run

        m = load_manifest(manifest)
        published = None
        if reference is not None:
            from sequence.reference import load_reference

            published = load_reference(reference)  # a wrong name fails before hours of training
        if workers or scheduler:
            from sequence.grid_cluster import run_grid_distributed

            results, failures, info = run_grid_distributed(m, grid, workers, scheduler, dataset)
            err.print(f"dask: {len(results)} runs in {info['seconds']} s ({info['dashboard']})", highlight=False)
        else:
            results, failures = run_grid(m, grid, progress=not quiet, dataset=dataset)
    except ConfigError as e:
        fail(str(e))
    rows = comparison_rows([load_run(Path(r["run"])) for r in results], m.states)
    _print_rows(rows, markdown, False, False, f"{grid}: {len(results)} runs (test split)", m.states)
    if published is not None and results:
        _print_reference(published, results, m, grid)
    for f in failures:
        err.print(f"[red]experiment {f['experiment']} did not run:[/] {f['error']}", highlight=False, soft_wrap=True)
    raise typer.Exit(1 if failures else 0)


def _print_reference(published: dict, results: list[dict], m, grid: Path) -> None:
    from sequence.reference import markdown, write_reference

    rows, paths = write_reference(results, published, m.runs_path, grid.name)
    print(markdown(rows, published))
    err.print(f"reference: {paths['csv']}, {paths['png']}", highlight=False, soft_wrap=True)


def main() -> None:
    run_app(app)
