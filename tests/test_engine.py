"""Stage one's engine: several real videos (different sizes, faces leaving and entering) embedded at
once through one model stage equal each embedded alone by stream_video; their MTCNN and backbone calls
are batched across sources; a damaged file among them fails alone."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from embed.embedder import EmbedSpec
from embed.engine import StreamEngine
from embed.errors import ClipError
from embed.model_stage import BatchStats, ModelStage
from embed.streaming import open_embedder, stream_video
from tests.closeness import assert_same_frames

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
    spec = EmbedSpec(("fer2013",), (None,), "cpu")
    alone = {v: _joined(list(stream_video(FOOTAGE / v, spec))) for v in VIDEOS}

    stage = ModelStage(threads=1)  # one thread: while it runs a call, the other sources' requests queue up
    engine = StreamEngine(open_embedder(spec, label="test", stage=stage), live=False)
    got: dict[str, list] = {v: [] for v in [*VIDEOS, "damaged"]}
    ended: dict[str, Exception | None] = {}
    done = threading.Semaphore(0)

    def add(name: str, path: Path) -> None:
        def end(error):
            ended[name] = error
            done.release()

        engine.add(path, on_chunk=got[name].append, on_end=end)

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
        assert_same_frames(mine, ref, label=v)
    # The sources' detections went through MTCNN together: some call held more than one source's frames.
    assert stage.stats()["FaceDetector._find_in_batch"].largest >= 2


def _holding(stage: ModelStage) -> threading.Event:
    """Occupy a one-thread stage until the returned event is set (returns once the call runs)."""
    busy, release = threading.Event(), threading.Event()

    def hold(items: list[int]) -> list[int]:
        busy.set()
        release.wait()
        return items

    stage.submit(hold, 0)
    assert busy.wait(30)
    return release


def test_requests_that_wait_while_a_call_runs_go_in_one_batch():
    """Three items queued while the stage's one thread is busy run as one call, each caller getting
    its own result."""
    stage = ModelStage(threads=1)
    batches = []

    def record(items: list[int]) -> list[int]:
        batches.append(list(items))
        return [i * 10 for i in items]

    release = _holding(stage)
    futures = {i: stage.submit(record, i) for i in (1, 2, 3)}
    assert stage.waiting == 3
    release.set()
    assert {i: f.result(timeout=30) for i, f in futures.items()} == {1: 10, 2: 20, 3: 30}
    stage.close()
    assert batches == [[1, 2, 3]]
    assert stage.stats()["test_requests_that_wait_while_a_call_runs_go_in_one_batch.<locals>.record"] == BatchStats(
        calls=1, items=3, largest=3, split=0
    )


def test_a_failing_batch_is_run_again_per_caller_so_only_the_bad_input_fails():
    """A batch of four whose one bad input fails the call is run again item by item: the three good
    callers get their results, the bad one its own error."""
    stage = ModelStage(threads=1)
    calls = []

    def halve(items: list[int]) -> list[float]:
        calls.append(list(items))
        if any(i < 0 for i in items):
            raise ValueError("negative input")
        return [i / 2 for i in items]

    release = _holding(stage)
    futures = {i: stage.submit(halve, i) for i in (2, 4, -1, 6)}
    release.set()
    assert futures[-1].exception(timeout=30) is not None and "negative input" in str(futures[-1].exception())
    assert {i: futures[i].result(timeout=30) for i in (2, 4, 6)} == {2: 1.0, 4: 2.0, 6: 3.0}
    stage.close()
    assert calls == [[2, 4, -1, 6], [2], [4], [-1], [6]]  # the batch ran, then each caller alone
    stats = stage.stats()["test_a_failing_batch_is_run_again_per_caller_so_only_the_bad_input_fails.<locals>.halve"]
    assert stats == BatchStats(calls=1, items=4, largest=4, split=1)


def test_open_engine_shares_torchs_threads_out_once_however_many_engines_a_process_opens():
    """Each of the stage's two threads gets half of the process's torch threads (one at least), and
    a second engine gets the same share, not half of the first's."""
    import torch

    from embed import engine as engine_module

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        engine_module._TORCH_THREADS = 4  # as if the process had started with four
        for _ in range(2):
            engine = engine_module.open_engine(EmbedSpec(("fer2013",), (None,), "cpu"), label="test", live=False)
            try:
                assert torch.get_num_threads() == 2 and len(engine.stage._threads) == 2
            finally:
                engine.close()
    finally:
        engine_module._TORCH_THREADS = before
        torch.set_num_threads(before)
