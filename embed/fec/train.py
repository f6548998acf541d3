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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset

from embed.backbones import get_backbone
from embed.backbones.fec import FEC, FECNet
from embed.errors import ConfigError
from embed.fec.data import EXPRESSIONS, Expressions, FaceImage, Triplets, read_affectnet, read_fec_csv
from embed.fec.inputs import CROP_CACHE_BYTES, Crops, ExpressionSet, FrozenOutputs, Inputs, TripletSet
from embed.manifest import load_manifest
from embed.pyplot import pyplot

log = logging.getLogger(__name__)
_COLUMNS = (
    TextColumn("[bold]fec-train"),
    BarColumn(),
    MofNCompleteColumn(),
    TextColumn("{task.fields[info]}"),
    TimeElapsedColumn(),
)
Encode = Callable[[torch.Tensor], torch.Tensor]


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
    # The frozen blocks' output computed once per image when all of it fits in memory (embed.fec.inputs)
    cache_frozen: bool = True


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
        self.frozen_blocks = 0  # the trunk's first blocks, trained by nobody (build_model sets it)

    def frozen_part(self) -> nn.Sequential:
        """The trunk's frozen blocks (they keep their weights and batch-norm statistics)."""
        return self.net.trunk[: self.frozen_blocks]

    def frozen(self, x: torch.Tensor) -> torch.Tensor:
        """0..255 crops -> the frozen blocks' output."""
        return self.frozen_part()((x - self.mean) / self.std)

    def from_frozen(self, f: torch.Tensor) -> torch.Tensor:
        """The frozen blocks' output -> the embedding (the trained blocks and the head)."""
        return self.net.head(self.net.trunk[self.frozen_blocks :](f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_frozen(self.frozen(x))


def build_model(cfg: FecTrainConfig) -> FECModel:
    trunk = get_backbone("inception").network(cfg.trunk_weights)
    model = FECModel(FECNet(trunk=trunk))
    blocks = len(list(model.net.trunk.children()))
    if not 0 <= cfg.unfreeze <= blocks:
        raise ConfigError(f"--unfreeze {cfg.unfreeze}: the trunk has {blocks} blocks; fix: pass 0..{blocks}")
    model.frozen_blocks = blocks - cfg.unfreeze
    model.frozen_part().requires_grad_(False)
    return model


def _set_train(model: FECModel, training: bool) -> None:
    model.train(training)
    model.frozen_part().eval()  # frozen blocks keep their batch-norm statistics


def _triplet_embeddings(encode: Encode, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, 3, ...) inputs -> (B, 3, D) L2-normalised embeddings."""
    return F.normalize(encode(x.flatten(0, 1).to(device)), dim=1).view(len(x), 3, -1)


def _inputs(sets: list[list[FaceImage]], cfg: FecTrainConfig, *, model: FECModel, bar: Progress | None) -> list[Inputs]:
    """What each image set feeds the net, one kind for all: the frozen blocks' outputs (each computed
    once) when there are frozen blocks and all of them fit in memory together, else the crops (kept in
    memory when a set's fit and no loader process reads them)."""
    if cfg.cache_frozen and model.frozen_blocks:
        plain = [Crops(images, FEC.input_size, keep=False) for images in sets]
        device = next(model.parameters()).device
        model.eval()  # the frozen blocks' batch-norm statistics, as in training and validation
        if FrozenOutputs.fit(plain, model.frozen, device=device):
            return [FrozenOutputs.compute(c, model.frozen, device=device, batch=cfg.batch * 3, bar=bar) for c in plain]
    keep = [cfg.workers == 0 and len(images) * 3 * FEC.input_size**2 <= CROP_CACHE_BYTES for images in sets]
    return [Crops(images, FEC.input_size, k) for images, k in zip(sets, keep, strict=True)]


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
    model: FECModel, triplets: DataLoader, expressions: DataLoader | None, *, device: torch.device, encode: Encode
) -> tuple[float, float | None]:
    """Triplet accuracy (the odd one found) and expression accuracy; `encode`: the model, or its
    part after the frozen blocks where the loaders give those blocks' outputs."""
    model.eval()
    hits = total = 0
    for x, odd in triplets:
        emb = _triplet_embeddings(encode, x, device)
        hits += int((predict_odd(emb).cpu() == odd).sum())
        total += len(odd)
    expr = None
    if expressions is not None:
        right = seen = 0
        for x, y in expressions:
            right += int((model.classifier(encode(x.to(device))).argmax(1).cpu() == y).sum())
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
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    model = build_model(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    with Progress(*_COLUMNS, disable=not progress, transient=True) as bar:
        sets = [train.images, val.images, *(e.images for e in affectnet or ())]
        train_in, val_in, *expr_in = _inputs(sets, cfg, model=model, bar=bar)
    once = isinstance(train_in, FrozenOutputs)
    encode = model.from_frozen if once else model
    if once:
        log.info("the trunk's %d frozen blocks ran once per image; epochs run the rest", model.frozen_blocks)
    train_dl = _loader(TripletSet(train, train_in), cfg, True, seed=cfg.seed)
    val_dl = _loader(TripletSet(val, val_in), cfg, False)
    expr_train = expr_val = None
    if affectnet is not None:
        expr_train = _loader(ExpressionSet(affectnet[0], expr_in[0]), cfg, True, seed=cfg.seed + 1)
        expr_val = _loader(ExpressionSet(affectnet[1], expr_in[1]), cfg, False)
    acc, expr_acc = evaluate(model, val_dl, expr_val, device=device, encode=encode)
    history: list[EpochLog] = [EpochLog(0, None, acc, expression_accuracy=expr_acc, seconds=0.0)]
    log.info("untrained: validation triplet accuracy %.3f (chance 1/3)", acc)
    best: tuple[float, int, dict] | None = None
    with Progress(*_COLUMNS, disable=not progress) as bar:
        task = bar.add_task("fec", total=cfg.epochs * len(train_dl), info="")
        for epoch in range(1, cfg.epochs + 1):
            start = time.perf_counter()
            _set_train(model, True)
            expr_iter = iter(expr_train) if expr_train is not None else None
            total = seen = 0.0
            for x, odd in train_dl:
                emb = _triplet_embeddings(encode, x, device)
                loss = triplet_loss(emb, odd.to(device), cfg.margin)
                if expr_iter is not None:
                    try:
                        xe, ye = next(expr_iter)
                    except StopIteration:  # AffectNet is cycled alongside the triplets
                        expr_iter = iter(expr_train)
                        xe, ye = next(expr_iter)
                    loss = loss + cfg.alpha * F.cross_entropy(model.classifier(encode(xe.to(device))), ye.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, seen = total + loss.item() * len(x), seen + len(x)
                bar.advance(task)
            acc, expr_acc = evaluate(model, val_dl, expr_val, device=device, encode=encode)
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
    plt = pyplot()

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
