"""`python -m sequence`: typer CLI for stage two. Each command parses its options, calls one library
function with one options object, and prints (sequence.cli_print)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from embed.cli_options import (
    CLUSTER_OPTIONS,
    DatasetOpt,
    DeviceOpt,
    JsonOpt,
    ManifestOpt,
    QuietOpt,
    with_options,
)
from embed.cluster import ClusterChoice
from embed.console import err, fail, run_app, setup_logging
from embed.errors import ConfigError
from sequence.cli_options import TRAIN_OPTIONS, CvOpt
from sequence.cli_predict import predict, serve
from sequence.cli_tune import tune
from sequence.config import TrainSettings

# rich_markup_mode=None: help texts say [default: ...] and random[:seed], which rich markup would eat.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Stage two of affectseq: sequence heads on cached embeddings; metrics, runs, predict.",
)


@app.command()
@with_options(TrainSettings, TRAIN_OPTIONS)
def train(
    settings: TrainSettings,
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    config: Annotated[Path | None, typer.Option(help="YAML of settings (as in a grid's base); options override it.")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Head parameter key=value (lists comma-separated), repeatable.")
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(help="Run once per seed (comma-separated, e.g. 0,1,2); figures are then mean ± sd over the runs."),
    ] = None,
    cv: CvOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a head on Train, select by Validation, report on Test; write a run folder."""
    setup_logging(quiet)
    from sequence.cli_print import print_aggregate, print_cv, print_state_table
    from sequence.experiment import TrainOptions
    from sequence.experiment import train as train_head

    options = TrainOptions(manifest, config, settings, params=param or [], seeds=seeds, cv=cv, progress=not quiet)
    try:
        out = train_head(options)
    except ConfigError as e:
        fail(str(e))
    if "folds" in out:
        print_cv(out, out["states"])
        print(json.dumps({k: v for k, v in out.items() if k != "states"}) if as_json else out["record"])
        return
    if "runs" in out:
        print_aggregate(out, out["states"])
        print(json.dumps({"runs": out["runs"], "aggregate": out["aggregate"]}) if as_json else "\n".join(out["runs"]))
        return
    print_state_table(out, out["states"])
    err.print(f"run folder: {out['run']}", highlight=False, soft_wrap=True)
    print(json.dumps({k: v for k, v in out.items() if k != "states"}) if as_json else out["run"])


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
    from sequence.cli_print import print_state_table
    from sequence.experiment import EvaluateOptions, evaluate_run

    try:
        result = evaluate_run(EvaluateOptions(run, manifest, device=device, by_subject=by_subject))
    except ConfigError as e:
        fail(str(e))
    print_state_table(result, result.pop("states"))
    if by_subject:
        err.print(
            f"per subject ({result['subjects']}): {result['by_subject_csv']}, {result['by_subject_png']}",
            highlight=False,
            soft_wrap=True,
        )
    print(json.dumps(result) if as_json else result["run"])


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
    from sequence.cli_print import print_rows
    from sequence.runs import runs_table

    try:
        table = runs_table(manifest, dataset)
    except ConfigError as e:
        fail(str(e))
    for p in table["partial"]:
        err.print(f"[yellow]{p}: unfinished run (killed or still running); not listed[/]", highlight=False, soft_wrap=True)
    title = f"{table['runs']} runs under {table['runs_path']} (test split; epochs = best/trained/max)"
    fmt = "json" if as_json else "markdown" if markdown else "csv" if as_csv else "table"
    print_rows(table["rows"], fmt=fmt, title=title, states=table["states"])


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
    from sequence.cli_print import print_compare
    from sequence.compare import CompareOptions, compare_two_runs

    try:
        out = compare_two_runs(CompareOptions(run_a, run_b, manifest))
    except ConfigError as e:
        fail(str(e))
    print_compare(out)
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
    from sequence.cli_print import print_compare_grids
    from sequence.compare import CompareOptions, compare_two_grids

    try:
        out = compare_two_grids(CompareOptions(str(grid_a), str(grid_b), manifest, dataset=dataset))
    except ConfigError as e:
        fail(str(e))
    print_compare_grids(out, f"{grid_b.name} against {grid_a.name}, experiment by experiment (test split)")
    if as_json:
        print(json.dumps(out))


@app.command()
@with_options(ClusterChoice, CLUSTER_OPTIONS)
def experiments(
    grid: Annotated[Path, typer.Argument(help="A grid YAML (see configs/).")],
    cluster: ClusterChoice,
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
    quiet: QuietOpt = False,
) -> None:
    """Run every configuration of a grid over the cache, then print their comparison table."""
    setup_logging(quiet)
    from sequence.cli_print import print_rows
    from sequence.grids import GridOptions, run_experiments

    options = GridOptions(grid, manifest, dataset, reference=reference, cluster=cluster, progress=not quiet)
    try:
        out = run_experiments(options)
    except ConfigError as e:
        fail(str(e))
    if out["cluster"]:
        info = out["cluster"]
        err.print(f"dask: {len(out['results'])} runs in {info['seconds']} s ({info['dashboard']})", highlight=False)
    title = f"{grid}: {len(out['results'])} runs (test split)"
    print_rows(out["rows"], fmt="markdown" if markdown else "table", title=title, states=out["states"])
    if out["reference"]:
        print(out["reference"]["markdown"])
        err.print(f"reference: {out['reference']['csv']}, {out['reference']['png']}", highlight=False, soft_wrap=True)
    for f in out["failures"]:
        err.print(f"[red]experiment {f['experiment']} did not run:[/] {f['error']}", highlight=False, soft_wrap=True)
    raise typer.Exit(1 if out["failures"] else 0)


@app.command()
def report(
    db: Annotated[str, typer.Option(help="The history database `sequence serve` wrote (a SQLite file or a URL).")],
    session: Annotated[str, typer.Option(help="The session's name (or id).")],
    out: Annotated[Path, typer.Option(help="Folder for report.html, report.csv and report.png.")] = Path("report"),
    as_json: JsonOpt = False,
) -> None:
    """A class session's report (per student the states over time, the class minute by minute) from
    a server's history, with no server running."""
    setup_logging(quiet=True)
    from sequence.serve.report import report_from_db

    try:
        result = report_from_db(db, session, out)
    except ConfigError as e:
        fail(str(e))
    err.print(
        f"session {result['session']}: {result['students']} students, {result['windows']} windows -> {result['html']}",
        highlight=False,
        soft_wrap=True,
    )
    print(json.dumps(result) if as_json else result["html"])


app.command()(tune)
app.command()(predict)
app.command()(serve)


def main() -> None:
    run_app(app)
