"""One readable training loop: AdamW, per-state losses summed, early stopping on validation."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.utils.data import RandomSampler, WeightedRandomSampler

from embed.lookahead import read_ahead
from sequence.config import TrainConfig
from sequence.data import SequenceSet
from sequence.heads import Head
from sequence.losses import make_loss, sample_weights
from sequence.metrics import evaluate, majority_levels, mean_over_states

log = logging.getLogger(__name__)


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    val_loss: float
    val_macro_f1: float
    val_accuracy: float
    seconds: float


def _batches(data: SequenceSet, rows: torch.Tensor, batch: int, device: torch.device):
    """The batches of `rows` in order, as float tensors on the device.

    Not a DataLoader: a batch is one slice of the padded split tensor (x[rows, :longest]), not a
    collation of per-clip items; a streamed split reads each batch's clips from the store with one
    concurrent zarr read and the next batch is read on a thread meanwhile (embed.lookahead). Loader
    worker processes gain nothing for these reads (embed.cache.CacheStore.iter_arrays says why).
    The draws are torch's own samplers (fit)."""

    def fetch(idx: torch.Tensor):
        lengths = data.lengths[idx]
        return data.x[idx, : int(lengths.max())], lengths, data.y[idx]

    chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    # A streamed split reads the next batch from the cache while the model works on this one.
    for x, lengths, y in read_ahead(fetch, chunks) if data.streamed else map(fetch, chunks):
        pin = device.type == "cuda"
        yield (x.pin_memory().to(device, non_blocking=True) if pin else x).float(), lengths.to(device), y.to(device)


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")


def predict_probs(
    model: Head, data: SequenceSet, batch: int, device: torch.device, amp: bool = False
) -> dict[str, np.ndarray]:
    """{state: (N, levels) softmax probabilities} in the order of data."""
    return _forward_all(model, data, batch, device=device, amp=amp)[0]


@torch.inference_mode()
def _forward_all(
    model: Head, data: SequenceSet, batch: int, device: torch.device, amp: bool, losses=None
) -> tuple[dict[str, np.ndarray], float]:
    """One pass over data: per-state probabilities and, given the losses, the mean loss (so
    validation runs the model once per epoch, not once for the loss and again for the metrics)."""
    model.eval()
    out: dict[str, list[np.ndarray]] = {s: [] for s in model.states}
    total = 0.0
    for x, lengths, y in _batches(data, torch.arange(len(data)), batch, device=device):
        with _autocast(device, amp):
            logits = model(x, lengths)
            if losses is not None:
                total += float(_loss_of(logits, y, losses, states=model.states)) * len(y)
        for s, lg in logits.items():
            out[s].append(torch.softmax(lg.float(), 1).cpu().numpy())
    probs = {s: np.concatenate(v) if v else np.zeros((0, 0)) for s, v in out.items()}
    return probs, total / max(len(data), 1)


def _loss_of(logits: dict[str, torch.Tensor], y: torch.Tensor, losses, states: list[str]) -> torch.Tensor:
    return sum(fn(logits[s], y[:, i]) for i, (s, fn) in enumerate(zip(states, losses, strict=True)))


def fit(
    model: Head,
    train: SequenceSet,
    val: SequenceSet,
    cfg: TrainConfig,
    levels: int,
    device: torch.device,
    progress: bool = True,
    on_epoch: Callable[[EpochLog], bool] | None = None,
) -> tuple[dict, list[EpochLog], int]:
    """Train, keep the parameters of the best validation epoch (or the last, with select "last");
    returns them, the history and that epoch. `on_epoch` sees each epoch's figures and returns True
    to stop there (a tuner's pruning). An empty `val` (a final model trained on Train and Validation
    together) needs select "last": there is nothing to select on."""
    if len(val) == 0 and cfg.select != "last":
        raise ValueError("fit without validation clips needs select 'last'")
    states = model.states
    train_y = train.y.numpy()
    losses = make_loss(cfg.loss, train_y, levels, device=device, gamma=cfg.focal_gamma)
    majority = majority_levels(train_y, states, levels)
    model.fit_input_stats(train.x, train.lengths)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = (
        WeightedRandomSampler(torch.as_tensor(sample_weights(train_y, levels)), len(train), replacement=True, generator=gen)
        if cfg.sampler == "weighted"
        else RandomSampler(range(len(train)), generator=gen)
    )
    steps = -(-len(train) // cfg.batch)
    history: list[EpochLog] = []
    best: tuple[float, int, dict] | None = None
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"train {model.name}", total=cfg.epochs * steps, info="")
        for epoch in range(1, cfg.epochs + 1):
            start = time.perf_counter()
            model.train()
            rows = torch.as_tensor(list(sampler), dtype=torch.int64)
            total, seen = 0.0, 0
            for x, lengths, y in _batches(train, rows, cfg.batch, device=device):
                with _autocast(device, cfg.amp):
                    loss = _loss_of(model(x, lengths), y, losses, states=states)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                total, seen = total + loss.item() * len(y), seen + len(y)
                bar.advance(task)
            val_loss, val_f1, val_acc = math.nan, math.nan, math.nan
            if len(val):
                probs, val_loss = _forward_all(model, val, cfg.batch, device=device, amp=cfg.amp, losses=losses)
                metrics = evaluate(val.y.numpy(), probs, states, levels=levels, majority=majority)
                val_f1, val_acc = mean_over_states(metrics, "macro_f1"), mean_over_states(metrics, "accuracy")
            entry = EpochLog(
                epoch,
                total / max(seen, 1),
                val_loss,
                val_macro_f1=val_f1,
                val_accuracy=val_acc,
                seconds=time.perf_counter() - start,
            )
            history.append(entry)
            # "last": every epoch is the best so far (the final parameters; never an early stop).
            score = {"macro_f1": entry.val_macro_f1, "accuracy": entry.val_accuracy, "loss": -val_loss, "last": epoch}[
                cfg.select
            ]
            if best is None or score > best[0]:
                best = (score, epoch, copy.deepcopy(model.state_dict()))
            bar.update(
                task,
                info=f"epoch {epoch}: loss {entry.train_loss:.3f} val {val_loss:.3f} "
                f"F1 {entry.val_macro_f1:.3f} (best {best[1]})",
            )
            log.debug("%s", asdict(entry))
            if on_epoch is not None and on_epoch(entry):
                log.info("stopped at epoch %d by the caller (pruned)", epoch)
                bar.update(task, total=epoch * steps, completed=epoch * steps)
                break
            if epoch - best[1] >= cfg.patience:
                log.info("early stop at epoch %d: no better validation %s since epoch %d", epoch, cfg.select, best[1])
                bar.update(task, total=epoch * steps, completed=epoch * steps)
                break
    assert best is not None
    return best[2], history, best[1]
