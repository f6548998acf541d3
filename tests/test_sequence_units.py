"""Stage two's parts on small tensors: heads, losses, metrics, frame choice, grids."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embed.errors import ConfigError
from sequence.data import FramePolicy, to_tensors
from sequence.grid_file import expand_grid
from sequence.heads import build_head, head_defaults, head_names
from sequence.losses import class_weights, focal_loss, ordinal_loss, sample_weights
from sequence.metrics import state_metrics
from sequence.runs import seed_groups

STATES = ["Boredom", "Engagement", "Confusion", "Frustration"]


def _batch(n=8, t=12, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, t, d, generator=g)
    lengths = torch.randint(3, t + 1, (n,), generator=g)
    lengths[0] = t
    x = x * (torch.arange(t)[None, :, None] < lengths[:, None, None])
    y = torch.randint(0, 4, (n, len(STATES)), generator=g)
    return x, lengths, y


def test_registry_has_the_heads():
    assert {"lstm", "gru", "fc", "tcn", "transformer"} <= set(head_names())
    assert head_defaults("lstm")["hidden"] == [256, 256]


@pytest.mark.parametrize("name", head_names())
def test_head_overfits_a_tiny_batch(name):
    torch.manual_seed(0)
    x, lengths, y = _batch()
    model = build_head(name, 16, STATES, levels=4, params={"dropout": 0.0})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        out = model(x, lengths)
        assert set(out) == set(STATES) and all(v.shape == (8, 4) for v in out.values())
        loss = sum(F.cross_entropy(out[s], y[:, i]) for i, s in enumerate(STATES))
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(x, lengths)
    assert loss.item() < first / 10
    for i, s in enumerate(STATES):
        assert torch.equal(out[s].argmax(1), y[:, i]), s


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", head_names())
def test_padding_never_changes_the_output(name, mode):
    """Whatever lies past a clip's length (zeros, noise, more of it) must not change its prediction,
    in eval and in training (where batch statistics must not count padded steps either)."""
    torch.manual_seed(1)
    x, lengths, _ = _batch(seed=2)
    model = build_head(name, 16, STATES, levels=4, params={"dropout": 0.0})
    model.fit_input_stats(x, lengths)
    model.train(mode == "train")
    noisy = x + torch.randn_like(x) * (torch.arange(x.shape[1])[None, :, None] >= lengths[:, None, None])
    longer = torch.cat([x, torch.randn(8, 5, 16)], 1)
    outs = []
    for inp in (x, noisy, longer):
        state = copy.deepcopy(model.state_dict())  # training mode moves running statistics: same start each time
        with torch.no_grad():
            outs.append(model(inp, lengths))
        model.load_state_dict(state)
    a, b, c = outs
    for s in STATES:
        torch.testing.assert_close(a[s], b[s], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a[s], c[s], atol=1e-5, rtol=1e-5)


def test_masked_batch_norm_trains_on_valid_steps_only():
    """Its batch statistics equal nn.BatchNorm1d's over the valid steps gathered into one batch."""
    from sequence.heads.tcn import MaskedBatchNorm1d

    torch.manual_seed(0)
    x = torch.randn(3, 5, 9) * 3 + 1
    lengths = torch.tensor([9, 4, 6])
    mask = (torch.arange(9)[None, :] < lengths[:, None])[:, None, :]
    ours, ref = MaskedBatchNorm1d(5), torch.nn.BatchNorm1d(5)
    got = ours(x + 100 * ~mask, mask)  # garbage in the padding
    valid = torch.cat([x[i, :, :n] for i, n in enumerate(lengths.tolist())], 1)[None]  # (1, 5, 19)
    want = ref(valid)
    torch.testing.assert_close(torch.cat([got[i, :, :n] for i, n in enumerate(lengths.tolist())], 1)[None], want)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)


def test_unknown_head_or_parameter_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown head 'perceiver'; fix: use one of fc, gru, lstm, tcn, transformer"):
        build_head("perceiver", 16, STATES, levels=4)
    with pytest.raises(ConfigError, match="head 'lstm' has no parameter 'hiden'; fix: use one of hidden"):
        build_head("lstm", 16, STATES, levels=4, params={"hiden": [8]})


def test_lstm_stacks_layers_of_different_sizes():
    model = build_head("lstm", 16, STATES, levels=4, params={"hidden": [8, 24], "fc": [5]})
    assert [layer.hidden_size for layer in model.layers] == [8, 24]
    assert model.outputs["Boredom"].in_features == 5


def test_metrics_against_hand_computed_values():
    y_true = np.array([0, 0, 1, 2, 3, 3])
    y_pred = np.array([0, 1, 1, 2, 3, 0])
    m = state_metrics(y_true, y_pred, 4, majority_level=0)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # level 0: P 1/2 R 1/2; level 1: P 1/2 R 1; level 2: P 1 R 1; level 3: P 1 R 1/2
    assert m["per_level_f1"] == pytest.approx([0.5, 2 / 3, 1.0, 2 / 3])
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 1 + 2 / 3) / 4)
    assert m["weighted_f1"] == pytest.approx((2 * 0.5 + 1 * 2 / 3 + 1 * 1 + 2 * 2 / 3) / 6)
    assert m["confusion"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]]
    assert m["majority_accuracy"] == pytest.approx(2 / 6)
    assert m["majority_macro_f1"] == pytest.approx(0.5 / 4)  # level 0: P 1/3 R 1 -> F1 1/2; others 0
    # low (0-1) vs high (2-3): only the last sample is wrong
    assert m["binary_accuracy"] == pytest.approx(5 / 6)


def test_class_weights_are_balanced():
    from sklearn.utils.class_weight import compute_class_weight

    w = class_weights(np.array([0, 0, 0, 1]), 4)
    np.testing.assert_allclose(w, [4 / 6, 2.0, 1.0, 1.0], rtol=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(20):  # scikit-learn's 'balanced' weights on the levels present
        y = rng.integers(0, int(rng.integers(1, 5)), int(rng.integers(1, 50)))
        present = np.unique(y)
        np.testing.assert_allclose(
            class_weights(y, 4)[present], compute_class_weight("balanced", classes=present, y=y), rtol=1e-6
        )


def test_focal_loss_reduces_to_cross_entropy_at_gamma_0_and_discounts_easy_samples():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.1, 0.2, 0.3, 0.4]])
    y = torch.tensor([0, 3])
    torch.testing.assert_close(focal_loss(logits, y, None, gamma=0.0), F.cross_entropy(logits, y))
    p = F.softmax(logits, 1)[[0, 1], [0, 3]]
    expected = (-((1 - p) ** 2) * p.log()).mean()
    torch.testing.assert_close(focal_loss(logits, y, None, gamma=2.0), expected)


def test_ordinal_loss_hand_case_and_order():
    logits = torch.log(torch.tensor([[0.7, 0.1, 0.1, 0.1]]))
    expected = -(math.log(0.7) + math.log(0.8) + math.log(0.9))
    assert ordinal_loss(logits, torch.tensor([0]), None).item() == pytest.approx(expected, rel=1e-5)
    # Mass on a far level costs more than the same mass on a near one; cross-entropy cannot tell.
    near = torch.log(torch.tensor([[0.5, 0.5, 1e-9, 1e-9]]))
    far = torch.log(torch.tensor([[0.5, 1e-9, 1e-9, 0.5]]))
    assert ordinal_loss(far, torch.tensor([0]), None) > ordinal_loss(near, torch.tensor([0]), None)
    torch.testing.assert_close(F.cross_entropy(near, torch.tensor([0])), F.cross_entropy(far, torch.tensor([0])))


def test_frame_policy_masks_faceless_frames_and_spreads_uniformly():
    prob = np.ones(300, dtype=np.float32)
    prob[100:150] = 0
    idx = FramePolicy(frames=10).select(prob)
    assert len(idx) == 10 and idx[0] == 0 and idx[-1] == 299 and not np.isin(idx, np.arange(100, 150)).any()
    assert len(FramePolicy(frames=None).select(prob)) == 250
    assert list(FramePolicy(frames=None, stride=100).select(prob)) == [0, 150, 250]  # every 100th *face* frame
    assert len(FramePolicy(frames=500).select(prob)) == 250


def test_to_tensors_pads_and_keeps_lengths():
    rng = np.random.default_rng(0)
    clips = []
    for t, faces in ((30, 30), (20, 12)):
        prob = np.r_[np.ones(faces), np.zeros(t - faces)].astype(np.float32)
        clips.append((rng.standard_normal((t, 4)).astype(np.float16), prob, np.arange(t, dtype=np.float32) / 10))
    s = to_tensors(clips, FramePolicy(frames=15), np.zeros((2, 4), dtype=np.int64), clip_ids=["a", "b"])
    assert s.x.shape == (2, 15, 4) and s.x.dtype == torch.float16
    assert s.lengths.tolist() == [15, 12]
    assert (s.x[1, 12:] == 0).all()
    np.testing.assert_allclose(s.durations, [3.0, 2.0], rtol=1e-5)


def test_deltas_append_frame_differences_of_the_chosen_frames():
    emb = (np.arange(10, dtype=np.float32)[:, None] ** 2 * np.ones((1, 3))).astype(np.float16)
    prob = np.ones(10, dtype=np.float32)
    s = to_tensors(
        [(emb, prob, np.arange(10, dtype=np.float32))],
        FramePolicy(frames=4, deltas=True),
        np.zeros((1, 4), dtype=np.int64),
        clip_ids=["a"],
    )
    assert s.x.shape == (1, 4, 6)  # frames 0, 3, 6, 9
    np.testing.assert_array_equal(s.x[0, :, 0].numpy(), [0, 9, 36, 81])
    np.testing.assert_array_equal(s.x[0, :, 3].numpy(), [0, 9, 27, 45])


def test_grid_expands_experiments_times_grid_and_checks_everything_first(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(
        "base: {epochs: 3, head_params: {dropout: 0.1}}\n"
        "experiments:\n  - {head: lstm, head_params: {hidden: [8]}}\n  - {head: fc}\n"
        "grid: {frames: [10, 20], batch: [4]}\n"
    )
    configs = expand_grid(grid)
    assert [(c.head, c.frames, c.batch, c.epochs) for c in configs] == [
        ("lstm", 10, 4, 3),
        ("lstm", 20, 4, 3),
        ("fc", 10, 4, 3),
        ("fc", 20, 4, 3),
    ]
    assert configs[0].head_params == {"dropout": 0.1, "hidden": [8]}
    grid.write_text("experiments:\n  - {head: lstm}\n  - {head: fc, epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"g\.yaml: experiment 2: unknown key 'epoch'; fix: use one of"):
        expand_grid(grid)
    grid.write_text("experiment: []\n")
    with pytest.raises(ConfigError, match="unknown key 'experiment'"):
        expand_grid(grid)


@pytest.fixture
def tiny_store_with_faceless_frames(tiny_embedded, tmp_path):
    """A copy of the tiny sample's store whose first clip lost its face in frames 2-4 (as stage
    one writes such frames: face_prob 0, zero embedding, `faces` counting the rest)."""
    import shutil

    import zarr

    from embed.cache import CacheStore

    path = tmp_path / tiny_embedded["store"].name
    shutil.copytree(tiny_embedded["store"], path)
    store = CacheStore(path, mode="a")
    clip = store.complete_ids()[0]
    g = zarr.open_group(str(path), mode="a")[f"clips/{clip}"]
    prob = g["face_prob"][...]
    prob[2:5] = 0
    g["face_prob"][...] = prob
    emb = g["embeddings"][...]
    emb[2:5] = 0
    g["embeddings"][...] = emb
    g.attrs["faces"] = int((prob > 0).sum())
    return CacheStore(path)


@pytest.mark.parametrize("policy", [FramePolicy(frames=None), FramePolicy(frames=4, deltas=True)])
def test_split_loading_streamed_or_not_gives_what_the_arrays_say(tiny_embedded, tiny_store_with_faceless_frames, policy):
    """On a real store: the loaded splits equal to_tensors over the raw arrays (faceless frames
    masked out), a streamed split yields exactly the in-memory rows for a batch or a chunk, and the
    memory estimate is the in-memory size."""
    from embed.layouts import read_dataset
    from embed.manifest import load_manifest
    from sequence.data import load_splits, padded_bytes

    store = tiny_store_with_faceless_frames
    m = load_manifest(tiny_embedded["manifest"])
    index = read_dataset(m, "tiny", generate=False)
    memory, report = load_splits(store, index, m.states, policy=policy, stream=False)
    streamed, streamed_report = load_splits(store, index, m.states, policy=policy, stream=True)
    assert not report.streamed and streamed_report.streamed
    ids = [c for d in memory.values() for c in d.clip_ids]
    raw = store.read_clips(ids)
    assert (raw[store.complete_ids()[0]].face_prob == 0).sum() == 3
    steps, dim = max(d.x.shape[1] for d in memory.values()), memory["Train"].x.shape[2]
    assert padded_bytes(store.clip_attrs(), ids, policy, dim=store.dim) == len(ids) * steps * dim * 2
    for split, a in memory.items():
        ref = to_tensors(
            [(raw[c].embeddings, raw[c].face_prob, raw[c].timestamps) for c in a.clip_ids],
            policy,
            a.y.numpy(),
            clip_ids=a.clip_ids,
        )
        assert torch.equal(ref.lengths, a.lengths) and torch.equal(ref.x, a.x[:, : ref.x.shape[1]])
        np.testing.assert_allclose(a.durations, ref.durations, rtol=1e-6)
        b = streamed[split]
        assert b.streamed and b.x.shape == a.x.shape and b.clip_ids == a.clip_ids
        assert torch.equal(b.lengths, a.lengths) and torch.equal(b.y, a.y)
        np.testing.assert_array_equal(b.durations, a.durations)
        rows = torch.tensor([len(a) - 1, 0])
        t = int(a.lengths[rows].max())
        assert torch.equal(b.x[rows, :t], a.x[rows, :t])
        assert torch.equal(b.x[0 : len(a)], a.x)
        sub_a, sub_b = a.subset([len(a) - 1]), b.subset([len(a) - 1])
        assert torch.equal(sub_b.x[torch.tensor([0]), : sub_b.x.shape[1]], sub_a.x)


def test_block_reads_with_known_completeness_equal_one_checked_read(tiny_embedded):
    from embed.cache import CacheStore

    store = CacheStore(tiny_embedded["store"])
    ids = store.complete_ids()
    names = ("embeddings", "face_prob")
    whole = store.read_arrays(ids, names)
    blocks = list(store.iter_arrays(ids, names, block=3, known_complete=True))
    assert [b for b, _ in blocks] == [ids[0:3], ids[3:6], ids[6:7]]
    for block, raw in blocks:
        for c in block:
            for n in names:
                np.testing.assert_array_equal(raw[c][n], whole[c][n])


def test_weighted_focal_and_ordinal_losses_are_class_weighted_means():
    """With class weights, each sample's loss counts by its true level's weight: sum(w_i l_i) / sum(w_i),
    the same normalisation as torch's weighted cross-entropy (checked at gamma 0)."""
    torch.manual_seed(0)
    logits, y = torch.randn(6, 4), torch.tensor([0, 0, 0, 1, 2, 3])
    w = torch.tensor([0.5, 1.0, 2.0, 4.0])
    per = torch.stack([focal_loss(logits[i : i + 1], y[i : i + 1], None, gamma=2.0) for i in range(6)])
    assert focal_loss(logits, y, w, gamma=2.0).item() == pytest.approx(((per * w[y]).sum() / w[y].sum()).item(), rel=1e-6)
    assert focal_loss(logits, y, w, gamma=0.0).item() == pytest.approx(F.cross_entropy(logits, y, weight=w).item(), rel=1e-6)
    per = torch.stack([ordinal_loss(logits[i : i + 1], y[i : i + 1], None) for i in range(6)])
    assert ordinal_loss(logits, y, w).item() == pytest.approx(((per * w[y]).sum() / w[y].sum()).item(), rel=1e-6)


def test_weighted_sampling_weights_rare_levels_up():
    y = np.array([[0, 2], [0, 2], [0, 2], [1, 3]])  # level 1 of state 0 and level 3 of state 1 are rare
    w = sample_weights(y, 4)
    # state 0: balanced weights 4/(2*3) for level 0, 4/(2*1) for level 1; state 1 likewise for 2 and 3.
    np.testing.assert_allclose(w, [(2 / 3 + 2 / 3) / 2] * 3 + [(2 + 2) / 2])


def test_select_last_keeps_the_final_epoch_and_never_stops_early():
    """The original study's training (configs/study.yaml): every epoch runs, the last one is kept,
    whatever validation says; the default keeps the best validation epoch and stops early."""
    from sequence.config import parse_config
    from sequence.data import SequenceSet
    from sequence.train import fit

    rng = np.random.default_rng(0)
    states = ["Boredom", "Engagement", "Confusion", "Frustration"]

    def split(n: int) -> SequenceSet:
        x = torch.from_numpy(rng.standard_normal((n, 6, 8)).astype(np.float16))
        y = torch.from_numpy(rng.integers(0, 4, (n, 4)))  # labels unrelated to x: validation wanders
        return SequenceSet(x, torch.full((n,), 6), y, clip_ids=[f"c{i}" for i in range(n)], durations=np.ones(n))

    train, val = split(24), split(12)
    for select, expect_all in (("last", True), ("macro_f1", False)):
        torch.manual_seed(0)
        model = build_head("fc", 8, states, levels=4, params={"hidden": [8]})
        cfg = parse_config({"epochs": 12, "patience": 1, "batch": 8, "select": select, "device": "cpu"}, "test")
        _, history, kept = fit(model, train, val, cfg=cfg, levels=4, device=torch.device("cpu"), progress=False)
        if expect_all:
            assert len(history) == 12 and kept == history[-1].epoch
        else:
            assert len(history) < 12  # patience 1 on noise stops early


def test_a_seed_group_lists_its_runs_by_seed_whatever_order_their_folders_began_in():
    def run(name: str, seed: int, head: str = "lstm") -> dict:
        return {"path": name, "config": {"seed": seed, "head": head}, "store": {"key": "k"}}

    # Seeds trained at once: seed 2's folder began (and sorts) before seed 1's.
    runs = [run("a", 0), run("b", 2), run("c", 5, "fc"), run("d", 1)]
    groups = seed_groups(runs)
    assert [[r["config"]["seed"] for r in g] for g in groups] == [[0, 1, 2], [5]]
