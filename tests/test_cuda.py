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
from embed.embedder import Embedder
from embed.layouts import Clip, DatasetIndex
from embed.model_stage import ModelStage
from embed.pipeline import embed_dataset

# bench/gpu.sh's rehearsal on a CPU machine sets AFFECTSEQ_GPU_TESTS_ON=cpu: the same tests run there
# (the CPU against itself), so a GPU machine's run is not the first run of this file.
DEVICE = os.environ.get("AFFECTSEQ_GPU_TESTS_ON", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")

FOOTAGE = Path(__file__).parents[1] / "data" / "footage"
VIDEOS = ["single_face.mp4", "face_noface.mov", "noface_face.mov", "WolfgangLanger_Pexels.mp4"]


def _embed(device: str, tmp: Path, in_flight: int) -> dict[str, dict[str, np.ndarray]]:
    stage = ModelStage() if in_flight > 1 else None
    embedder = Embedder(get_backbone("fer2013").build("fer2013", torch.device(device)), stage=stage)
    index = DatasetIndex("footage", FOOTAGE, [Clip(Path(v).stem, FOOTAGE / v, "Train", None) for v in VIDEOS])
    store = CacheStore.create(tmp, "footage", embedder.configs[0])
    report = embed_dataset(index, store, embedder, progress=False, clips_in_flight=in_flight)
    if stage is not None:
        stage.close()
    assert report.embedded == len(VIDEOS) and not report.failures, report.failures
    return {
        cid: {name: store.root["clips"][cid][name][...] for name in ("embeddings", "face_prob", "boxes", "timestamps")}
        for cid in store.complete_ids()
    }


def _assert_close(a: dict, b: dict, box_px: float, emb: float) -> None:
    assert sorted(a) == sorted(b)
    for cid in a:
        np.testing.assert_array_equal(a[cid]["timestamps"], b[cid]["timestamps"])
        same_faces = (a[cid]["face_prob"] > 0) == (b[cid]["face_prob"] > 0)
        assert same_faces.mean() > 0.99, cid  # a frame at MTCNN's threshold may tip either way
        both = (a[cid]["face_prob"] > 0) & (b[cid]["face_prob"] > 0)
        np.testing.assert_allclose(a[cid]["boxes"][both], b[cid]["boxes"][both], atol=box_px)
        ea, eb = a[cid]["embeddings"][both].astype(np.float32), b[cid]["embeddings"][both].astype(np.float32)
        np.testing.assert_allclose(ea, eb, atol=emb)


def test_the_gpu_embeds_what_the_cpu_embeds(tmp_path):
    # GPU convolutions round differently (TF32 off, but other kernels): boxes within half a pixel,
    # embeddings within 0.02 of values near 0.1-1.
    _assert_close(_embed(DEVICE, tmp_path / "gpu", 1), _embed("cpu", tmp_path / "cpu", 1), box_px=0.5, emb=0.02)


def test_clips_in_flight_on_the_gpu_equal_one_clip_at_a_time(tmp_path):
    _assert_close(_embed(DEVICE, tmp_path / "flight", 8), _embed(DEVICE, tmp_path / "one", 1), box_px=0.5, emb=0.02)
