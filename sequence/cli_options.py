"""Options of stage two's commands used more than once, and its option groups (embed.cli_options'
with_options): a run's training settings and the windows predict and serve score."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from embed.cli_options import DatasetOpt, DeviceOpt, KeyOpt, WeightsOpt
from sequence.config import default


def _default(name: str) -> str:
    return f"[default: {default(name)}]"


RunOpt = Annotated[Path, typer.Option("--run", "-r", help="A finished run folder.")]
RunWeightsOpt = Annotated[str | None, typer.Option(help="Backbone weights, if the run's cannot be found.")]
SampleFpsOpt = Annotated[
    float | None, typer.Option(help="Frames per second kept from a live source [the run's frame rate]; 5 is plenty.")
]
CvOpt = Annotated[
    int | None,
    typer.Option(
        help="Cross-validate: K folds over Train and Validation by subject (a run folder each; no student in two "
        "folds), figures as the mean over folds with a 95 % interval; the final model is trained on both and tested once."
    ),
]

# sequence.windows.WindowOptions
WINDOW_OPTIONS: dict[str, Any] = {
    "window": Annotated[float | None, typer.Option(help="Window in seconds [the run's training clip length].")],
    "hop": Annotated[float, typer.Option(help="Seconds between window starts.")],
    "smooth": Annotated[
        float, typer.Option(help="Live: seconds of exponential smoothing in a 'smoothed' key (raw values kept) [0: off].")
    ],
    "min_face_fraction": Annotated[
        float | None, typer.Option(help="Windows with fewer face frames than this share are not scored [default: 0.5].")
    ],
}

# sequence.experiment.TrainSettings
TRAIN_OPTIONS: dict[str, Any] = {
    "dataset": DatasetOpt,
    "backbone": Annotated[str | None, typer.Option("--backbone", "-b", help="Backbone(s) whose cache to train on.")],
    "weights": WeightsOpt,
    "key": KeyOpt,
    "head": Annotated[str | None, typer.Option(help=f"Head: lstm, gru, fc, tcn or transformer {_default('head')}.")],
    "frames": Annotated[int | None, typer.Option(help=f"Frames per clip, uniform over time; 0: all {_default('frames')}.")],
    "stride": Annotated[int | None, typer.Option(help="Keep every k-th face frame first.")],
    "train_clips": Annotated[int | None, typer.Option(help="Seeded random subset of Train [all].")],
    "loss": Annotated[str | None, typer.Option(help=f"weighted_ce, ce, focal or ordinal {_default('loss')}.")],
    "sampler": Annotated[str | None, typer.Option(help="shuffle or weighted (class-balanced draws).")],
    "epochs": Annotated[int | None, typer.Option(help=f"Most epochs {_default('epochs')}.")],
    "batch": Annotated[int | None, typer.Option(help=f"Batch size {_default('batch')}.")],
    "lr": Annotated[float | None, typer.Option(help=f"AdamW learning rate {_default('lr')}.")],
    "patience": Annotated[int | None, typer.Option(help=f"Early-stopping patience in epochs {_default('patience')}.")],
    "select": Annotated[
        str | None,
        typer.Option(help="Validation score: macro_f1, accuracy or loss; last: keep the final epoch, no early stop."),
    ],
    "seed": Annotated[int | None, typer.Option(help=f"Seed for init, subset and batch order {_default('seed')}.")],
    "device": DeviceOpt,
    "stream": Annotated[
        bool | None,
        typer.Option(
            "--stream/--no-stream",
            help="Read embeddings from the cache batch by batch [only when the splits would not fit in memory].",
        ),
    ],
}
