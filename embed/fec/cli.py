"""`python -m embed fec-train`: train the FEC backbone from files on disk. Parses options, calls
embed.fec.train.train_from_files, prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from embed.cli_options import DeviceOpt, JsonOpt, ManifestOpt, QuietOpt
from embed.console import err, fail, setup_logging
from embed.errors import ConfigError


def fec_train(
    triplets: Annotated[Path, typer.Option(help="FEC triplet CSV to train on (faceexp-comparison-data-train-public.csv).")],
    images: Annotated[Path, typer.Option(help="Folder holding the FEC images, named as in the CSV's URLs.")],
    val_triplets: Annotated[
        Path | None, typer.Option(help="FEC triplet CSV to validate on (the -test- CSV) [a seeded tenth of --triplets].")
    ] = None,
    affectnet: Annotated[
        Path | None,
        typer.Option(help="AffectNet folder with training.csv and validation.csv (expression 0-7) [triplets only]."),
    ] = None,
    trunk_weights: Annotated[
        str, typer.Option(help="Inception-ResNet-V1 trunk: vggface2, casia-webface, a state-dict file or random[:seed].")
    ] = "vggface2",
    unfreeze: Annotated[int, typer.Option(min=0, help="Trunk blocks, from mixed_7a back, trained too.")] = 0,
    epochs: Annotated[int, typer.Option(min=1, help="Most epochs.")] = 20,
    batch: Annotated[int, typer.Option(min=1, help="Triplets per step (and as many AffectNet images).")] = 32,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 5e-4,
    margin: Annotated[float, typer.Option(help="Triplet-loss margin.")] = 0.2,
    alpha: Annotated[float, typer.Option(help="Weight of the AffectNet cross-entropy.")] = 0.1,
    patience: Annotated[int, typer.Option(min=1, help="Epochs without a better validation triplet accuracy.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed for init, order and the validation tenth.")] = 0,
    device: DeviceOpt = None,
    workers: Annotated[int, typer.Option(min=0, help="Image-decoding processes (0: in this one).")] = 0,
    out: Annotated[Path | None, typer.Option(help="Output folder [<runs_dir>/fec/<time> of the manifest].")] = None,
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the FEC-style expression backbone; writes fec.pt for `embed run --backbone fec --weights`."""
    setup_logging(quiet)
    try:
        from embed.fec.train import FecTrainConfig, FecTrainOptions, train_from_files

        config = FecTrainConfig(
            trunk_weights=trunk_weights,
            unfreeze=unfreeze,
            margin=margin,
            alpha=alpha,
            epochs=epochs,
            batch=batch,
            lr=lr,
            patience=patience,
            seed=seed,
            device=device or "auto",
            workers=workers,
        )
        options = FecTrainOptions(
            triplets,
            images,
            config,
            val_triplets=val_triplets,
            affectnet=affectnet,
            out=out,
            manifest=manifest,
            progress=not quiet,
        )
        result = train_from_files(options)
    except ConfigError as e:
        fail(str(e))
    t = Table(title="fec-train summary", show_header=False)
    summary = result.as_dict()
    t.add_row(
        "trunk",
        trunk_weights
        + ("  [bold yellow](RANDOM: no pretrained knowledge)[/]" if trunk_weights.startswith("random") else ""),
    )
    t.add_row(
        "validation triplet accuracy",
        f"{summary['triplet_accuracy']:.3f} at epoch {summary['best_epoch']} "
        f"(untrained {summary['untrained_triplet_accuracy']:.3f}, chance 0.333)",
    )
    if summary["expression_accuracy"] is not None:
        t.add_row("validation expression accuracy", f"{summary['expression_accuracy']:.3f} (chance 0.125)")
    t.add_row("weights", f"{result.weights}  (use: python -m embed run --backbone fec --weights {result.weights})")
    err.print(t)
    print(json.dumps(summary) if as_json else result.weights)
