"""What a tuning study costs on DAiSEE-sized data on this machine (`make bench-tune`).

Writes DAiSEE's Train and Validation splits as synthetic clips (5,358 and 1,429 clips, 300 frames of
512 float16, bench/stage_two.py's store), loads them as training does at `--frames`, and times one
epoch (training and the validation pass) of each head the sample's space samples, at its defaults.
From those, the cost of a `--trials` study whose heads are drawn evenly: every trial run to
`--epochs` (no pruning: the bound), and with the share of epochs the median pruner left in a
study measured on the built-in sample (`--epoch-share`, from `sequence tune`'s trials.csv).
With `--sample-trials N` (after `make demo`), it first times `sequence tune configs/tune_sample.yaml
--trials N` on the built-in sample, in this process's way (one process) and on two dask workers, each
into a fresh runs folder: trials per hour, and the share of possible epochs the trials ran.
    .venv/bin/python bench/tune_cost.py [--frames 100] [--epochs 30] [--trials 100] [--epoch-share 0.62]
                                        [--sample-trials 12 [--sample-only]] [--json]
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


def sample_study(trials: int, workers: int | None) -> dict:
    """`sequence tune configs/tune_sample.yaml` on the built-in sample's cache, into a fresh runs folder."""
    import subprocess
    import sys

    import yaml

    root = Path(__file__).parents[1]
    manifest = yaml.safe_load((root / "data_manifest.yaml").read_text())
    runs = Path(tempfile.mkdtemp(prefix="affectseq-tune-sample-"))
    manifest.update({"cache_dir": str(root / "cache"), "runs_dir": str(runs)})
    manifest["datasets"]["sample"]["root"] = str(root / manifest["datasets"]["sample"]["root"])
    (runs / "m.yaml").write_text(yaml.safe_dump(manifest))
    cmd = [
        sys.executable,
        "-m",
        "sequence",
        "tune",
        str(root / "configs/tune_sample.yaml"),
        "--manifest",
        str(runs / "m.yaml"),
    ]
    cmd += ["--trials", str(trials), "--quiet", "--json"] + (["--workers", str(workers)] if workers else [])
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"tune on the sample failed: {proc.stderr.strip().splitlines()[-1]}; fix: `make demo` first")
    seconds = time.perf_counter() - start
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    trained = [
        json.loads((Path(r) / "metrics.json").read_text())["epochs_trained"] for t in out["trials"] for r in t["runs"]
    ]
    epochs = yaml.safe_load((root / "configs/tune_sample.yaml").read_text())["base"]["epochs"]
    shutil.rmtree(runs, ignore_errors=True)
    trial_s = out["cluster"]["seconds"] if out["cluster"] else None
    return {
        "workers": workers,
        "trials": len(out["trials"]),
        "pruned": sum(t.get("pruned", False) for t in out["trials"]),
        "command_s": round(seconds, 1),
        "trials_on_cluster_s": trial_s,
        "trials_per_hour": round(3600 * len(out["trials"]) / (trial_s or seconds)),
        "epoch_share": round(sum(trained) / (epochs * len(trained)), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=5358)
    ap.add_argument("--validation", type=int, default=1429)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=30, help="A trial's most epochs.")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--epoch-share", type=float, default=None, help="Epochs run / epochs possible in a pruned study.")
    ap.add_argument("--sample-trials", type=int, default=0, help="Also time a study of N trials on the sample.")
    ap.add_argument("--sample-only", action="store_true", help="Only the sample's studies (no DAiSEE-sized cost).")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sample = [sample_study(args.sample_trials, workers) for workers in (None, 2)] if args.sample_trials else []
    for s in sample:
        where = f"on {s['workers']} workers" if s["workers"] else "in one process"
        print(
            f"sample, {s['trials']} trials ({s['pruned']} pruned) {where}: {s['command_s']} s the command, "
            f"~{s['trials_per_hour']} trials/hour, epoch share {s['epoch_share']}"
        )
    if args.sample_only:
        print(json.dumps({"sample_studies": sample}) if args.json else "", end="\n" if args.json else "")
        return
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
        "sample_studies": sample,
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
