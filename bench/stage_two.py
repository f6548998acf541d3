"""Stage-two figures on this machine, on a DAiSEE-sized split written to a real Zarr store.

Writes N synthetic clips (default 5,358, the Train split) of 300 x 512 float16 embeddings through
the cache writer, then measures, in the same run:
  - loading the split into memory through training's own reader (sequence.data.load_clips:
    concurrent reads, padded tensors) against plain zarr reading one array at a time (the
    baseline), in clips/s;
  - one training epoch of the `lstm` (256/256, the study's head) and `fc` (128/64) heads on it,
    at 300 and 100 frames, in sequences/s, in memory and streamed from the store batch by batch
    (what training does with a cache larger than memory).
    .venv/bin/python bench/stage_two.py [--clips 5358] [--frames 300,100] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from embed.cache import CacheStore, ClipData
from embed.clip_writer import write_clip
from sequence.config import TrainConfig
from sequence.data import FramePolicy, load_clips
from sequence.heads import build_head
from sequence.train import fit

STATES = ["Boredom", "Engagement", "Confusion", "Frustration"]
CONFIG = {
    "backbone": "synthetic",
    "weights": "random:0",
    "dim": 512,
    "input_size": 0,
    "detector": {},
    "frames": {"max_fps": None},
    "preprocessing_version": 0,
}


def machine() -> str:
    cpu = (
        next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def write_store(root: Path, n: int, frames: int, dim: int) -> tuple[CacheStore, list[str], float]:
    store = CacheStore.create(root, "bench", CONFIG)
    rng = np.random.default_rng(0)
    # Smooth-in-time embeddings compress like real ones (random noise would not compress at all).
    base = rng.standard_normal((64, dim)).astype(np.float32)
    ts = np.arange(frames, dtype=np.float32) / 30
    ids = [f"{1100000000 + i}" for i in range(n)]
    start = time.perf_counter()
    for i, clip_id in enumerate(ids):
        w = np.cos(np.outer(np.linspace(0, 1 + i % 7, frames), np.arange(64)) + i)
        emb = (w @ base / 8 + rng.standard_normal((frames, dim)) * 0.05).astype(np.float16)
        data = ClipData(emb, ts, np.ones(frames, np.float32), boxes=np.zeros((frames, 4), np.float32))
        write_clip(store, clip_id, data, source={"size": 0, "mtime_ns": 0, "sha256": ""})
    return store, ids, time.perf_counter() - start


def load(store: CacheStore, ids: list[str], frames: int, labels: np.ndarray, stream: bool = False):
    start = time.perf_counter()
    data = load_clips(store, ids, FramePolicy(frames), labels=labels, attrs=store.clip_attrs(), stream=stream)
    return data, len(ids) / (time.perf_counter() - start)


def load_one_by_one(store: CacheStore, ids: list[str]) -> float:
    """The baseline: plain synchronous zarr, one array after another."""
    clips = zarr.open_group(str(store.path), mode="r")["clips"]
    start = time.perf_counter()
    for i in ids:
        g = clips[i]
        [g[n][...] for n in ("embeddings", "face_prob")]
    return len(ids) / (time.perf_counter() - start)


def epoch_rate(data, head: str, params: dict, frames: int) -> float:
    torch.manual_seed(0)
    model = build_head(head, data.x.shape[2], STATES, levels=4, params=params)
    cfg = TrainConfig(epochs=1, batch=32, patience=1, device="cpu")
    val = data.subset(np.arange(min(32, len(data))))
    start = time.perf_counter()
    fit(model, data, val, cfg=cfg, levels=4, device=torch.device("cpu"), progress=False)
    return len(data) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=5358)
    ap.add_argument("--frames", default="300,100")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="affectseq-bench2-"))
    try:
        store, ids, write_s = write_store(tmp, args.clips, 300, dim=512)
        size = sum(f.stat().st_size for f in store.path.rglob("*") if f.is_file())
        serial_ids = ids[: max(1, len(ids) // 5)]  # the slow baseline on a fifth of the clips
        serial_rate = load_one_by_one(store, serial_ids)
        labels = np.random.default_rng(1).integers(0, 4, (len(ids), 4))
        out = {
            "device": machine(),
            "clips": len(ids),
            "store_mb": round(size / 1e6, 1),
            "write_clips_per_s": round(len(ids) / write_s, 1),
            "heads": {},
        }
        for frames in (int(f) for f in args.frames.split(",")):
            data, rate = load(CacheStore(store.path), ids, frames, labels=labels)
            out.setdefault("load_clips_per_s", round(rate, 1))  # the first (the longest sequences)
            for head, params in (("lstm", {"hidden": [256, 256]}), ("fc", {"hidden": [128, 64]})):
                rate = epoch_rate(data, head, params, frames=frames)
                out["heads"][f"{head}@{frames}"] = {"sequences_per_s": round(rate, 1), "epoch_s": round(len(ids) / rate, 1)}
            del data
        streamed, _ = load(CacheStore(store.path), ids, frames, labels=labels, stream=True)
        for head, params in (("lstm", {"hidden": [256, 256]}), ("fc", {"hidden": [128, 64]})):
            rate = epoch_rate(streamed, head, params, frames=frames)
            out["heads"][f"{head}@{frames} streamed"] = {
                "sequences_per_s": round(rate, 1),
                "epoch_s": round(len(ids) / rate, 1),
            }
        out["load_clips_per_s_one_at_a_time"] = round(serial_rate, 1)
        out["load_speedup"] = round(out["load_clips_per_s"] / serial_rate, 2)
        lstm300, fc300 = out["heads"].get("lstm@300"), out["heads"].get("fc@300")
        if lstm300 and fc300:
            out["fc_vs_lstm_300"] = round(fc300["sequences_per_s"] / lstm300["sequences_per_s"], 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {out['device']}")
    print(
        f"store: {out['clips']} clips x 300 x 512 float16, {out['store_mb']} MB, written at "
        f"{out['write_clips_per_s']} clips/s"
    )
    print(
        f"load into memory: {out['load_clips_per_s']} clips/s (concurrent reads) vs "
        f"{out['load_clips_per_s_one_at_a_time']} clips/s (plain zarr, one array at a time): x{out['load_speedup']}"
    )
    for k, v in out["heads"].items():
        print(f"epoch {k}: {v['sequences_per_s']} sequences/s, {v['epoch_s']} s per epoch")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
