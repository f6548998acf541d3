"""Train FECNet (embed.backbones.fec) on FEC triplets plus AffectNet classes, as Schoneveld et al.:
triplet loss on L2-normalised 128-d embeddings (margin 0.2) + alpha x cross-entropy of an
expression classifier on the embedding, on stage one's 140x140 face crops. The trunk
(Inception-ResNet-V1, VGGFace2 by default) stays frozen except its last `unfreeze` blocks.
The result is a state dict the `fec` backbone loads strictly: `embed run --backbone fec --weights F`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from embed.backbones import get_backbone
from embed.backbones.fec import FEC, FECNet
from embed.errors import ConfigError
from embed.fec.data import EXPRESSIONS, Expressions, FaceImage, Triplets, load_crop, read_affectnet, read_fec_csv
from embed.manifest import load_manifest

log = logging.getLogger(__name__)
CROP_CACHE_BYTES = 2 << 30  # crops kept in memory (uint8) when all of them fit in this


@dataclass
class FecTrainConfig:
    trunk_weights: str = "vggface2"  # as --weights of the inception backbone: a release, a file, random[:seed]
    unfreeze: int = 0  # trunk blocks (from mixed_7a backwards) trained with the head
    margin: float = 0.2
    alpha: float = 0.1  # weight of the AffectNet cross-entropy
    epochs: int = 20
    batch: int = 32  # triplets per step (and as many AffectNet images)
    lr: float = 5e-4
    weight_decay: float = 1e-4
    patience: int = 5
    seed: int = 0
    device: str = "cpu"
    workers: int = 0  # DataLoader processes decoding images


@dataclass
class EpochLog:
    epoch: int  # 0: the untrained net, the baseline every later epoch is compared with
    loss: float | None
    triplet_accuracy: float
    expression_accuracy: float | None
    seconds: float


def triplet_loss(emb: torch.Tensor, odd: torch.Tensor, margin: float) -> torch.Tensor:
    """FECNet's loss on (B, 3, D) L2-normalised embeddings, odd (B,) the least alike of each triplet:
    the similar pair (a, p) must be closer, by the margin, than either of them is to the odd one n:
    max(0, |a-p|^2 - |a-n|^2 + m) + max(0, |a-p|^2 - |p-n|^2 + m), averaged over triplets."""
    rows = torch.arange(len(odd), device=emb.device)
    a = emb[rows, (odd + 1) % 3]
    p = emb[rows, (odd + 2) % 3]
    n = emb[rows, odd]
    ap, an, pn = ((a - p) ** 2).sum(1), ((a - n) ** 2).sum(1), ((p - n) ** 2).sum(1)
    return (F.relu(ap - an + margin) + F.relu(ap - pn + margin)).mean()


def predict_odd(emb: torch.Tensor) -> torch.Tensor:
    """(B, 3, D) -> (B,) index of the image farthest from the closest pair."""
    d = torch.stack(
        [
            ((emb[:, 1] - emb[:, 2]) ** 2).sum(1),  # pair (1, 2) closest -> 0 is odd
            ((emb[:, 0] - emb[:, 2]) ** 2).sum(1),  # pair (0, 2) -> 1
            ((emb[:, 0] - emb[:, 1]) ** 2).sum(1),
        ],
        1,
    )  # pair (0, 1) -> 2
    return d.argmin(1)


class FECModel(nn.Module):
    """FECNet plus the expression classifier used only while training; input 0..255 crops."""

    def __init__(self, net: FECNet, classes: int = len(EXPRESSIONS)):
        super().__init__()
        self.net = net
        self.classifier = nn.Linear(FEC.dim, classes)
        self.register_buffer("mean", torch.tensor(FEC.mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(FEC.std).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_model(cfg: FecTrainConfig) -> FECModel:
    trunk = get_backbone("inception").network(cfg.trunk_weights)
    model = FECModel(FECNet(trunk=trunk))
    blocks = len(list(model.net.trunk.children()))
    if not 0 <= cfg.unfreeze <= blocks:
        raise ConfigError(f"--unfreeze {cfg.unfreeze}: the trunk has {blocks} blocks; fix: pass 0..{blocks}")
    for block in _frozen_blocks(model, cfg):
        block.requires_grad_(False)
    return model


def _frozen_blocks(model: FECModel, cfg: FecTrainConfig) -> list[nn.Module]:
    blocks = list(model.net.trunk.children())
    return blocks[: len(blocks) - cfg.unfreeze]


def _set_train(model: FECModel, cfg: FecTrainConfig, training: bool) -> None:
    model.train(training)
    for block in _frozen_blocks(model, cfg):
        block.eval()  # frozen blocks keep their batch-norm statistics


def _triplet_embeddings(model: FECModel, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, 3, C, S, S) crops -> (B, 3, D) L2-normalised embeddings."""
    return F.normalize(model(x.flatten(0, 1).to(device)), dim=1).view(len(x), 3, -1)


class _Crops:
    """Face crops by image index, read from disk, kept in memory (uint8) when they all fit."""

    def __init__(self, images: list[FaceImage], size: int, keep: bool):
        self.images, self.size = images, size
        self.kept: dict[int, torch.Tensor] | None = {} if keep else None

    def __call__(self, i: int) -> torch.Tensor:
        if self.kept is not None and i in self.kept:
            return self.kept[i].float()
        crop = load_crop(self.images[i], self.size)
        if self.kept is not None:
            crop = crop.round().clamp(0, 255).to(torch.uint8)
            self.kept[i] = crop
            return crop.float()
        return crop


class TripletSet(Dataset):
    def __init__(self, triplets: Triplets, crops: _Crops):
        self.triplets, self.crops = triplets, crops

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, i: int):
        return torch.stack([self.crops(int(j)) for j in self.triplets.index[i]]), int(self.triplets.odd[i])


class ExpressionSet(Dataset):
    def __init__(self, expressions: Expressions, crops: _Crops):
        self.expressions, self.crops = expressions, crops

    def __len__(self) -> int:
        return len(self.expressions)

    def __getitem__(self, i: int):
        return self.crops(i), int(self.expressions.labels[i])


def _crops(images: list[FaceImage], cfg: FecTrainConfig) -> _Crops:
    keep = cfg.workers == 0 and len(images) * 3 * FEC.input_size**2 <= CROP_CACHE_BYTES
    return _Crops(images, FEC.input_size, keep)


def _loader(data: Dataset, cfg: FecTrainConfig, shuffle: bool, seed: int = 0) -> DataLoader:
    return DataLoader(
        data,
        batch_size=cfg.batch,
        shuffle=shuffle,
        num_workers=cfg.workers,
        generator=torch.Generator().manual_seed(seed),
        drop_last=False,
    )


@torch.inference_mode()
def evaluate(
    model: FECModel, triplets: DataLoader, expressions: DataLoader | None, device: torch.device
) -> tuple[float, float | None]:
    """Triplet accuracy (the odd one found) and expression accuracy."""
    model.eval()
    hits = total = 0
    for x, odd in triplets:
        emb = _triplet_embeddings(model, x, device)
        hits += int((predict_odd(emb).cpu() == odd).sum())
        total += len(odd)
    expr = None
    if expressions is not None:
        right = seen = 0
        for x, y in expressions:
            right += int((model.classifier(model(x.to(device))).argmax(1).cpu() == y).sum())
            seen += len(y)
        expr = right / max(seen, 1)
    return hits / max(total, 1), expr


@dataclass
class FecResult:
    weights: Path
    best_epoch: int
    history: list[EpochLog] = field(default_factory=list)

    @property
    def best(self) -> EpochLog:
        return self.history[self.best_epoch]

    def as_dict(self) -> dict:
        return {
            "weights": str(self.weights),
            "best_epoch": self.best_epoch,
            "untrained_triplet_accuracy": self.history[0].triplet_accuracy,
            "triplet_accuracy": self.best.triplet_accuracy,
            "expression_accuracy": self.best.expression_accuracy,
            "epochs_run": len(self.history) - 1,
        }


@dataclass(frozen=True)
class FecTrainOptions:
    """What `embed fec-train` is told: the FEC triplet CSV and image folder, optionally FEC's test CSV
    to validate on and an AffectNet folder, the output folder (None: <runs_dir>/fec/<time> of the
    manifest) and the training settings."""

    triplets: Path
    images: Path
    config: FecTrainConfig = field(default_factory=FecTrainConfig)
    val_triplets: Path | None = None
    affectnet: Path | None = None
    out: Path | None = None
    manifest: Path = Path("data_manifest.yaml")
    progress: bool = True


def train_from_files(options: FecTrainOptions) -> FecResult:
    """Read the datasets (FEC CSVs, AffectNet folder) and train. Without val_triplets a seeded
    tenth of the training triplets validates (they may share images with the rest: prefer FEC's
    own test CSV)."""
    from embed.devices import resolve_device

    cfg = dataclasses.replace(options.config, device=str(resolve_device(options.config.device)))
    out_dir = options.out
    if out_dir is None:
        if not options.manifest.is_file():
            raise ConfigError(f"{options.manifest}: no manifest to find runs_dir in; fix: pass --out DIR")
        out_dir = load_manifest(options.manifest).runs_path / "fec" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    train = read_fec_csv(options.triplets, options.images)
    if options.val_triplets is not None:
        val = read_fec_csv(options.val_triplets, options.images)
    else:
        if len(train) < 10:
            raise ConfigError(
                f"{options.triplets}: {len(train)} usable triplets, too few to hold out a validation tenth; "
                f"fix: pass --val-triplets"
            )
        rows = np.random.default_rng(cfg.seed).permutation(len(train))
        cut = len(train) // 10
        train, val = train.subset(np.sort(rows[cut:])), train.subset(np.sort(rows[:cut]))
    expressions = None
    if options.affectnet is not None:
        expressions = (read_affectnet(options.affectnet, "training"), read_affectnet(options.affectnet, "validation"))
    return train_fec(train, val, cfg, out_dir=Path(out_dir), affectnet=expressions, progress=options.progress)


def train_fec(
    train: Triplets,
    val: Triplets,
    cfg: FecTrainConfig,
    *,
    out_dir: Path,
    affectnet: tuple[Expressions, Expressions] | None = None,
    progress: bool = True,
) -> FecResult:
    """Train, keep the epoch with the best validation triplet accuracy, write out_dir/fec.pt
    (FECNet's state dict), history.json, config.json and curves.png."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    model = build_model(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    train_crops, val_crops = _crops(train.images, cfg), _crops(val.images, cfg)
    train_dl = _loader(TripletSet(train, train_crops), cfg, True, seed=cfg.seed)
    val_dl = _loader(TripletSet(val, val_crops), cfg, False)
    expr_train = expr_val = None
    if affectnet is not None:
        expr_train = _loader(ExpressionSet(affectnet[0], _crops(affectnet[0].images, cfg)), cfg, True, seed=cfg.seed + 1)
        expr_val = _loader(ExpressionSet(affectnet[1], _crops(affectnet[1].images, cfg)), cfg, False)
    acc, expr_acc = evaluate(model, val_dl, expr_val, device=device)
    history: list[EpochLog] = [EpochLog(0, None, acc, expression_accuracy=expr_acc, seconds=0.0)]
    log.info("untrained: validation triplet accuracy %.3f (chance 1/3)", acc)
    best: tuple[float, int, dict] | None = None
    columns = [
        TextColumn("[bold]fec-train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("fec", total=cfg.epochs * len(train_dl), info="")
        for epoch in range(1, cfg.epochs + 1):
            start = time.perf_counter()
            _set_train(model, cfg, True)
            expr_iter = iter(expr_train) if expr_train is not None else None
            total = seen = 0.0
            for x, odd in train_dl:
                emb = _triplet_embeddings(model, x, device)
                loss = triplet_loss(emb, odd.to(device), cfg.margin)
                if expr_iter is not None:
                    try:
                        xe, ye = next(expr_iter)
                    except StopIteration:  # AffectNet is cycled alongside the triplets
                        expr_iter = iter(expr_train)
                        xe, ye = next(expr_iter)
                    loss = loss + cfg.alpha * F.cross_entropy(model.classifier(model(xe.to(device))), ye.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, seen = total + loss.item() * len(x), seen + len(x)
                bar.advance(task)
            acc, expr_acc = evaluate(model, val_dl, expr_val, device=device)
            seconds = time.perf_counter() - start
            entry = EpochLog(epoch, total / max(seen, 1), acc, expression_accuracy=expr_acc, seconds=seconds)
            history.append(entry)
            if best is None or acc > best[0]:
                best = (acc, epoch, copy.deepcopy(model.net.state_dict()))
            expr_text = f" expression {expr_acc:.3f}" if expr_acc is not None else ""
            bar.update(task, info=f"epoch {epoch}: loss {entry.loss:.3f} triplet acc {acc:.3f}{expr_text} (best {best[1]})")
            if epoch - best[1] >= cfg.patience:
                log.info("early stop at epoch %d: no better validation triplet accuracy since epoch %d", epoch, best[1])
                break
    assert best is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / "fec.pt"
    tmp = out_dir / "fec.pt.partial"
    torch.save(best[2], tmp)
    os.replace(tmp, weights)  # a killed run never leaves a half-written weights file
    (out_dir / "history.json").write_text(json.dumps([asdict(h) for h in history], indent=1))
    (out_dir / "config.json").write_text(
        json.dumps({**asdict(cfg), "train_triplets": len(train), "val_triplets": len(val), "best_epoch": best[1]}, indent=1)
    )
    _plot(history, out_dir / "curves.png")
    return FecResult(weights, best[1], history)


def _plot(history: list[EpochLog], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h.epoch for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs[1:], [h.loss for h in history[1:]], marker="o")
    a.set(xlabel="epoch", ylabel="training loss", title="loss")
    b.plot(epochs, [h.triplet_accuracy for h in history], marker="o", label="triplet (validation)")
    if history and history[0].expression_accuracy is not None:
        b.plot(epochs, [h.expression_accuracy for h in history], marker="o", label="expression (validation)")
    b.axhline(1 / 3, color="grey", ls="--", label="triplet chance")
    b.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title="validation")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
