"""Stage one's engine: several real videos (different sizes, faces leaving and entering) embedded at
once through one model stage equal each embedded alone by stream_video; their MTCNN and backbone calls
are batched across sources; a damaged file among them fails alone."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from embed.engine import StreamEngine
from embed.errors import ClipError
from embed.model_stage import ModelStage
from embed.streaming import open_embedder, stream_video

FOOTAGE = Path(__file__).parents[1] / "data" / "footage"
VIDEOS = ["single_face.mp4", "face_noface.mov", "noface_face.mov", "WolfgangLanger_Pexels.mp4"]


def _joined(chunks) -> dict[str, np.ndarray]:
    return {
        "embeddings": np.concatenate([c.data.embeddings for c in chunks]).astype(np.float32),
        "face_prob": np.concatenate([c.data.face_prob for c in chunks]),
        "boxes": np.concatenate([c.data.boxes for c in chunks]),
        "timestamps": np.concatenate([c.data.timestamps for c in chunks]),
    }


def test_sources_in_one_engine_equal_each_alone_and_a_damaged_one_fails_alone(tmp_path):
    damaged = tmp_path / "damaged.mp4"
    data = (FOOTAGE / "single_face.mp4").read_bytes()
    damaged.write_bytes(data[:2000] + bytes(len(data) - 2000))  # the header, then zeros
    alone = {v: _joined(list(stream_video(FOOTAGE / v, backbone="fer2013", device="cpu"))) for v in VIDEOS}

    stage = ModelStage()
    engine = StreamEngine(open_embedder("test", backbone="fer2013", device="cpu", stage=stage), live=False)
    got: dict[str, list] = {v: [] for v in [*VIDEOS, "damaged"]}
    ended: dict[str, Exception | None] = {}
    done = threading.Semaphore(0)

    def add(name: str, path: Path) -> None:
        def end(error):
            ended[name] = error
            done.release()

        engine.add(path, got[name].append, end)

    for v in VIDEOS:
        add(v, FOOTAGE / v)
    add("damaged", damaged)
    for _ in range(len(got)):
        assert done.acquire(timeout=300)
    engine.close()

    assert isinstance(ended.pop("damaged"), ClipError) and got["damaged"] == []
    assert all(e is None for e in ended.values()), ended
    for v in VIDEOS:
        mine, ref = _joined(got[v]), alone[v]
        np.testing.assert_array_equal(mine["timestamps"], ref["timestamps"])
        # Batching changes float rounding in MTCNN and the CNN only: the same faces, boxes within a
        # hundredth of a pixel, embeddings within float16 resolution.
        np.testing.assert_array_equal(mine["face_prob"] > 0, ref["face_prob"] > 0)
        np.testing.assert_allclose(mine["face_prob"], ref["face_prob"], atol=1e-4)
        np.testing.assert_allclose(mine["boxes"], ref["boxes"], atol=1e-2)
        np.testing.assert_allclose(mine["embeddings"], ref["embeddings"], atol=2e-2)


def test_requests_that_wait_while_a_call_runs_go_in_one_batch():
    """Three callers arrive while the stage's one thread is busy: their items run as one call."""
    stage = ModelStage(threads=1)
    busy, release, batches = threading.Event(), threading.Event(), []

    def hold(items: list[int]) -> list[int]:
        busy.set()
        release.wait(30)
        return items

    def record(items: list[int]) -> list[int]:
        batches.append(list(items))
        return [i * 10 for i in items]

    first = threading.Thread(target=stage.run, args=("hold", hold, 0))
    first.start()
    assert busy.wait(30)
    results: dict[int, int] = {}
    callers = [threading.Thread(target=lambda i=i: results.__setitem__(i, stage.run("x", record, i))) for i in (1, 2, 3)]
    for t in callers:
        t.start()
    queued = threading.Event()
    for _ in range(3000):  # all three queued (each call blocks, so their queueing is the only signal)
        if stage.waiting == 3 and queued.set() is None:
            break
        queued.wait(0.01)
    assert queued.is_set()
    release.set()
    for t in [first, *callers]:
        t.join(timeout=30)
    stage.close()
    assert batches == [[1, 2, 3]] and results == {1: 10, 2: 20, 3: 30}
    assert (stage.calls, stage.items) == (2, 4)


def test_a_failing_batch_is_run_again_per_caller_so_only_the_bad_input_fails():
    stage = ModelStage()

    def halve(items: list[int]) -> list[float]:
        if any(i < 0 for i in items):
            raise ValueError("negative input")
        return [i / 2 for i in items]

    results: dict[int, object] = {}
    gate = threading.Barrier(4)

    def call(i: int) -> None:
        gate.wait()
        try:
            results[i] = stage.run("halve", halve, i)
        except ValueError as e:
            results[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in (2, 4, -1, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    stage.close()
    assert results[2] == 1.0 and results[4] == 2.0 and results[6] == 3.0
    assert isinstance(results[-1], ValueError)
