"""The cache as a `torch.utils.data.Dataset`, for a model of one's own in a notebook: one split's clips
read as training reads them (complete clips with a label, face frames only, `frames` spread
uniformly over them, optional deltas), each with its labels and subject."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from embed.layouts import read_dataset
from embed.manifest import load_manifest
from sequence.data import FramePolicy, SequenceSet, load_splits
from sequence.fusion import open_input


class ClipDataset(Dataset):
    """Clip i as {"x": (length, D) float32, "y": (states,) int64 levels, "clip_id", "subject"};
    `collate` pads a batch as training does: (B, T, D) zero-padded after each clip, lengths, levels."""

    def __init__(self, data: SequenceSet, states: list[str], levels: int, subject_of: dict[str, str | None]):
        self.data, self.states, self.levels = data, states, levels
        self.subjects = [subject_of.get(c) for c in data.clip_ids]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        n = int(self.data.lengths[i])
        return {
            "x": self.data.x[[i], :n][0].float(),
            "y": self.data.y[i],
            "clip_id": self.data.clip_ids[i],
            "subject": self.subjects[i],
        }

    @property
    def labels(self) -> torch.Tensor:
        """(N, states) int64: every clip's levels, states in the manifest's order."""
        return self.data.y

    @staticmethod
    def collate(items: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(it["x"]) for it in items], dtype=torch.int64)
        x = torch.zeros((len(items), int(lengths.max()), items[0]["x"].shape[1]))
        for b, it in enumerate(items):
            x[b, : len(it["x"])] = it["x"]
        return x, lengths, torch.stack([it["y"] for it in items])


def split_dataset(
    split: str,
    *,
    manifest: str | Path = "data_manifest.yaml",
    dataset: str | None = None,
    backbone: str = "inception",
    weights: str | None = None,
    key: str | None = None,
    frames: int | None = 100,
    stride: int | None = None,
    deltas: bool = False,
) -> ClipDataset:
    """One split (Train, Validation or Test) of a dataset's cache, as `sequence train` reads it."""
    m = load_manifest(Path(manifest))
    name, _ = m.dataset(dataset)
    store = open_input(m.cache_path, name, backbone, weights=weights, key=key)
    index = read_dataset(m, name, generate=False)
    data, report = load_splits(store, index, m.states, policy=FramePolicy(frames, stride, deltas), splits=(split,))
    return ClipDataset(data[split], m.states, levels=m.levels, subject_of=report.subject_of)
