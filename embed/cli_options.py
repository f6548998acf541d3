"""The options stage one's commands share, defined once (typer has no option groups)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from embed.extraction import DetectorConfig

ManifestOpt = Annotated[Path, typer.Option("--manifest", "-m", help="Data manifest (YAML).")]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", "-d", help="Dataset name [default: the manifest's default_dataset].")
]
BackboneOpt = Annotated[str, typer.Option("--backbone", "-b", help="fer2013, inception, resnet18 or fec.")]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        "-w",
        help="A named release (fer2013, vggface2, casia-webface, imagenet), a state-dict file, "
        "or random[:seed] [default: the backbone's release].",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
MaxFpsOpt = Annotated[float | None, typer.Option("--max-fps", help="Keep at most this many frames per second.")]
_DET = DetectorConfig()  # the detector's defaults, for the help texts
DetectEveryOpt = Annotated[
    int | None,
    typer.Option("--detect-every", min=1, help=f"Run MTCNN on every k-th frame [default: {_DET.detect_every}]."),
]
DetectWidthOpt = Annotated[
    int | None,
    typer.Option(
        "--detect-width", min=32, help=f"Frames shrunk to this width for detection [default: {_DET.detect_width}]."
    ),
]
MinFaceOpt = Annotated[
    int | None,
    typer.Option("--min-face-size", min=8, help=f"Smallest face in detection pixels [default: {_DET.min_face_size}]."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or info logs.")]
