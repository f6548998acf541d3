"""Stage one on a GPU (skipped where torch sees none; bench/gpu.sh runs them on a GPU machine): the
detector and the backbone on CUDA give what they give on the CPU, and clips in flight through the
batched engine leave the stores the one-clip path leaves, on real footage."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from embed.backbones import get_backbone
from embed.cache import CacheStore
from embed.clip_embedding import ClipTargets
from embed.embedder import Embedder
from embed.layouts import Clip, DatasetIndex
from embed.local_run import embed_dataset
from embed.model_stage import ModelStage
from tests.closeness import assert_same_frames

# bench/gpu.sh's rehearsal on a CPU machine sets AFFECTSEQ_GPU_TESTS_ON=cpu: the same tests run there,
# the CPU compared with itself (which proves the code paths run, not that a GPU agrees), so a GPU
# machine's run is not the first run of this file.
DEVICE = os.environ.get("AFFECTSEQ_GPU_TESTS_ON", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")

FOOTAGE = Path(__file__).parents[1] / "data" / "footage"
VIDEOS = ["single_face.mp4", "face_noface.mov", "noface_face.mov", "WolfgangLanger_Pexels.mp4"]


def _embed(device: str, tmp: Path, in_flight: int) -> dict[str, dict[str, np.ndarray]]:
    stage = ModelStage() if in_flight > 1 else None
    embedder = Embedder(get_backbone("fer2013").build("fer2013", torch.device(device)), stage=stage)
    index = DatasetIndex("footage", FOOTAGE, [Clip(Path(v).stem, FOOTAGE / v, "Train", labels=None) for v in VIDEOS])
    store = CacheStore.create(tmp, "footage", embedder.configs[0])
    try:
        report = embed_dataset(index, embedder, ClipTargets([store]), progress=False, clips_in_flight=in_flight)
    finally:
        if stage is not None:
            stage.close()
        embedder.close()
    assert report.embedded == len(VIDEOS) and not report.failures, report.failures
    return {
        cid: {name: store.root["clips"][cid][name][...] for name in ("embeddings", "face_prob", "boxes", "timestamps")}
        for cid in store.complete_ids()
    }


def test_the_gpu_embeds_what_the_cpu_embeds(tmp_path):
    # The GPU's convolutions round differently, and its backbone runs in float16 (autocast): boxes
    # within half a pixel, and each frame nearer its own CPU embedding than its neighbours'. Where a
    # frame at MTCNN's threshold tips the other way, both tracks differ there: compare the rest.
    gpu, cpu = _embed(DEVICE, tmp_path / "gpu", 1), _embed("cpu", tmp_path / "cpu", 1)
    assert sorted(gpu) == sorted(cpu)
    for cid in cpu:
        np.testing.assert_array_equal(gpu[cid]["timestamps"], cpu[cid]["timestamps"])
        same_faces = (gpu[cid]["face_prob"] > 0) == (cpu[cid]["face_prob"] > 0)
        assert same_faces.mean() > 0.99, cid
        keep = {k: v[same_faces] for k, v in gpu[cid].items()}, {k: v[same_faces] for k, v in cpu[cid].items()}
        assert_same_frames(*keep, label=cid, same_device=DEVICE == "cpu")


def test_clips_in_flight_on_the_gpu_equal_one_clip_at_a_time(tmp_path):
    flight, one = _embed(DEVICE, tmp_path / "flight", 8), _embed(DEVICE, tmp_path / "one", 1)
    assert sorted(flight) == sorted(one)
    for cid in one:
        np.testing.assert_array_equal(flight[cid]["timestamps"], one[cid]["timestamps"])
        assert_same_frames(flight[cid], one[cid], label=cid)
