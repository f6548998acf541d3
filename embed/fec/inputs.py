"""What `fec-train` feeds the net: each image's face crop, or, where every image's output of the
trunk's frozen blocks fits in memory, that output, computed once per image.

The frozen blocks run in eval mode and get no gradient, so every epoch (and every validation pass)
would compute the same tensors again; with the whole trunk frozen (the default) they are nearly all
of an epoch's work (Inception-ResNet-V1 up to mixed_7a: some 30 ms an image on one CPU core, against
under 1 ms for the head). Computed once, an epoch costs the head alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from rich.progress import Progress
from torch.utils.data import Dataset

from embed.fec.data import Expressions, FaceImage, Triplets, load_crop

CROP_CACHE_BYTES = 2 << 30  # crops kept in memory (uint8) when all of them fit in this
FEATURE_CACHE_BYTES = 2 << 30  # frozen blocks' outputs kept (float32) when all of them fit in this


class Crops:
    """Face crops by image index, read from disk, kept in memory (uint8) when `keep`."""

    def __init__(self, images: list[FaceImage], size: int, keep: bool):
        self.images, self.size = images, size
        self.kept: dict[int, torch.Tensor] | None = {} if keep else None

    def __len__(self) -> int:
        return len(self.images)

    def __call__(self, i: int) -> torch.Tensor:
        if self.kept is not None and i in self.kept:
            return self.kept[i].float()
        # Whole 0..255 values, kept or not: the same crop whichever way it is fed.
        crop = load_crop(self.images[i], self.size).round().clamp(0, 255).to(torch.uint8)
        if self.kept is not None:
            self.kept[i] = crop
        return crop.float()


class FrozenOutputs:
    """The frozen blocks' output by image index, computed once for all images in batches."""

    def __init__(self, outputs: torch.Tensor):
        self.outputs = outputs

    def __len__(self) -> int:
        return len(self.outputs)

    def __call__(self, i: int) -> torch.Tensor:
        return self.outputs[i]

    @staticmethod
    @torch.inference_mode()
    def fit(sets: list[Crops], frozen: Callable[[torch.Tensor], torch.Tensor], *, device: torch.device) -> bool:
        """Whether the frozen blocks' outputs of every image of all these sets fit in FEATURE_CACHE_BYTES
        together (one kind of input for all of them: an epoch feeds one net part)."""
        first = frozen(sets[0](0)[None].to(device))
        images = sum(len(c) for c in sets)
        return images * first[0].numel() * first.element_size() <= FEATURE_CACHE_BYTES

    @classmethod
    @torch.inference_mode()
    def compute(
        cls,
        crops: Crops,
        frozen: Callable[[torch.Tensor], torch.Tensor],
        *,
        device: torch.device,
        batch: int,
        bar: Progress | None = None,
    ) -> FrozenOutputs:
        """`frozen` (0..255 crops -> the frozen blocks' output) on every crop, `batch` at a time."""
        outputs: torch.Tensor | None = None
        task = bar.add_task("fec", total=len(crops), info="frozen blocks, once per image") if bar else None
        for start in range(0, len(crops), batch):
            stop = min(start + batch, len(crops))
            out = frozen(torch.stack([crops(i) for i in range(start, stop)]).to(device)).cpu()
            if outputs is None:
                outputs = torch.empty((len(crops), *out.shape[1:]), dtype=out.dtype)
            outputs[start:stop] = out
            if bar is not None and task is not None:
                bar.advance(task, stop - start)
        if bar is not None and task is not None:
            bar.remove_task(task)
        return cls(outputs if outputs is not None else torch.empty(0))


Inputs = Crops | FrozenOutputs


class TripletSet(Dataset):
    def __init__(self, triplets: Triplets, inputs: Inputs):
        self.triplets, self.inputs = triplets, inputs

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, i: int):
        return torch.stack([self.inputs(int(j)) for j in self.triplets.index[i]]), int(self.triplets.odd[i])


class ExpressionSet(Dataset):
    def __init__(self, expressions: Expressions, inputs: Inputs):
        self.expressions, self.inputs = expressions, inputs

    def __len__(self) -> int:
        return len(self.expressions)

    def __getitem__(self, i: int):
        return self.inputs(i), int(self.expressions.labels[i])
