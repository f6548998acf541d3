"""What a tuning study costs on DAiSEE-sized data on this machine (`make bench-tune`).

Writes DAiSEE's Train and Validation splits as synthetic clips (5,358 and 1,429 clips, 300 frames of
512 float16, bench/stage_two.py's store), loads them as training does at `--frames`, and times one
epoch (training and the validation pass) of each head the sample's space samples, at its defaults.
From those, the cost of a `--trials` study whose heads are drawn evenly: every trial run to
`--epochs` (no pruning: the bound), and with the share of epochs the median pruner left in a
study measured on the built-in sample (`--epoch-share`, from `sequence tune`'s trials.csv).
    .venv/bin/python bench/tune_cost.py [--frames 100] [--epochs 30] [--trials 100] [--epoch-share 0.62] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from stage_two import STATES, machine, write_store

from embed.cache import CacheStore
from sequence.config import TrainConfig
from sequence.data import FramePolicy, load_clips
from sequence.heads import build_head
from sequence.train import fit

HEADS = ("lstm", "gru", "tcn", "transformer", "fc")


def epoch_seconds(train, val, head: str) -> float:
    """One epoch of `head` (defaults) on train, with its validation pass over val."""
    torch.manual_seed(0)
    model = build_head(head, train.x.shape[2], STATES, levels=4)
    cfg = TrainConfig(epochs=1, batch=32, patience=1, device="cpu")
    start = time.perf_counter()
    fit(model, train, val, cfg=cfg, levels=4, device=torch.device("cpu"), progress=False)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=5358)
    ap.add_argument("--validation", type=int, default=1429)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=30, help="A trial's most epochs.")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--epoch-share", type=float, default=None, help="Epochs run / epochs possible in a pruned study.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="affectseq-tune-cost-"))
    try:
        store, ids, write_s = write_store(tmp, args.train + args.validation, 300, dim=512)
        labels = np.random.default_rng(1).integers(0, 4, (len(ids), 4))
        data = load_clips(CacheStore(store.path), ids, FramePolicy(args.frames), labels=labels, attrs=store.clip_attrs())
        train, val = data.subset(np.arange(args.train)), data.subset(np.arange(args.train, len(ids)))
        per_head = {h: round(epoch_seconds(train, val, h), 1) for h in HEADS}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mean_epoch = float(np.mean(list(per_head.values())))
    bound_h = args.trials * args.epochs * mean_epoch / 3600
    out = {
        "device": machine(),
        "train": args.train,
        "validation": args.validation,
        "frames": args.frames,
        "write_clips_per_s": round(len(ids) / write_s, 1),
        "epoch_seconds": per_head,
        "trials": args.trials,
        "epochs": args.epochs,
        "hours_unpruned": round(bound_h, 1),
        "hours_pruned": round(bound_h * args.epoch_share, 1) if args.epoch_share else None,
    }
    print(f"machine: {out['device']}")
    print(f"Train {args.train} + Validation {args.validation} clips at {args.frames} frames; one epoch (with validation):")
    for head, s in per_head.items():
        print(f"  {head:12s} {s:7.1f} s")
    print(f"{args.trials} trials (heads drawn evenly) x {args.epochs} epochs: {out['hours_unpruned']} h unpruned", end="")
    print(f", {out['hours_pruned']} h at an epoch share of {args.epoch_share}" if args.epoch_share else "")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
