"""`python -m embed import`, `export` and `expressions`: features in and out of the cache, and the
expression track of one video. Each parses its options, calls one library function, prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from embed.cli_options import DatasetOpt, DeviceOpt, JsonOpt, KeyOpt, ManifestOpt, QuietOpt, WeightsOpt
from embed.console import err, fail, setup_logging
from embed.errors import ClipError, ConfigError


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
    from embed.cli_print import print_import
    from embed.importing import ImportOptions, import_features

    names = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    options = ImportOptions(fmt, src, manifest, dataset=dataset, name=name, columns=names, fps=fps, progress=not quiet)
    try:
        report = import_features(options)
    except ConfigError as e:
        fail(str(e))
    out = report.as_dict()
    print_import(out)
    print(json.dumps(out) if as_json else f"cache: {out['store']}")
    raise typer.Exit(report.exit_code)


def export(
    backbone: Annotated[str, typer.Option("--backbone", "-b", help="The store's backbone or import name.")],
    fmt: Annotated[str, typer.Option("--format", help="hdf5 (one file) or npy (a folder).")],
    out: Annotated[Path, typer.Option(help="The HDF5 file or the npy folder to write.")],
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    dataset: DatasetOpt = None,
    weights: WeightsOpt = None,
    key: KeyOpt = None,
    split: Annotated[str | None, typer.Option(help="Only this split (Train, Validation or Test).")] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a store's complete clips to HDF5 or NumPy files, readable without zarr or affectseq."""
    setup_logging(quiet)
    from embed.exporting import ExportOptions, export_features

    options = ExportOptions(
        backbone, fmt, out, manifest=manifest, dataset=dataset, weights=weights, key=key, split=split, progress=not quiet
    )
    try:
        result = export_features(options)
    except ConfigError as e:
        fail(str(e))
    err.print(f"exported {result['clips']} clips of {result['store']} to {result['out']}", highlight=False, soft_wrap=True)
    print(json.dumps(result) if as_json else result["out"])


def expressions(
    video: Annotated[
        str, typer.Argument(help="A video file, a URL, a capture device (with --input-format) or '-' for standard input.")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Folder for expressions.csv and expressions.png [./expressions/<video name>].")
    ] = None,
    backbone: Annotated[str, typer.Option("--backbone", "-b", help="A backbone with an expression classifier.")] = "fer2013",
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
    input_format: Annotated[
        str | None, typer.Option(help="FFmpeg input format of a device or stream (v4l2, avfoundation, dshow...).")
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """The seven expression probabilities of every frame of a video (expressions.csv) and their
    timeline (expressions.png), from one decode and face track."""
    setup_logging(quiet)
    from embed.cli_print import print_expressions
    from embed.expressions import ExpressionOptions, expression_track

    options = ExpressionOptions(video, out, backbone, weights=weights, device=device, input_format=input_format)
    try:
        result = expression_track(options)
    except (ConfigError, ClipError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps({k: result[k] for k in ("frames", "faces", "mean", "csv", "png", "weights", "rotation")}))
        return
    print_expressions(result)
    print(result["csv"])
