"""Per-state losses for imbalanced, ordered levels.

DAiSEE is heavily imbalanced (Engagement level 0 is 0.6 % of Train, Frustration level 0 is 78 %):
plain cross-entropy learns the majority level and scores F1 0 on the rest, as the original study
did. Hence class-weighted cross-entropy by default. Focal and ordinal losses are written here because
torch ships neither for softmax outputs (torchvision's focal loss is the binary sigmoid form).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from embed.errors import ConfigError

LOSSES = ("weighted_ce", "ce", "focal", "ordinal")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def class_weights(y: np.ndarray, levels: int) -> np.ndarray:
    """scikit-learn's 'balanced' weights, n / (levels present * n_k); a level absent from y gets
    weight 1. One line of arithmetic: importing scikit-learn for it cost every training 1-2 s."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=levels)
    present = counts > 0
    w = np.ones(levels, dtype=np.float32)
    w[present] = len(y) / (present.sum() * counts[present])
    return w


def focal_loss(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, gamma: float) -> torch.Tensor:
    """Softmax focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_true)^gamma."""
    logp = F.log_softmax(logits.float(), dim=1).gather(1, y[:, None])[:, 0]
    loss = -((1 - logp.exp()) ** gamma) * logp
    if weight is not None:
        w = weight[y]
        return (loss * w).sum() / w.sum()
    return loss.mean()


def ordinal_loss(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Binary cross-entropy on the cumulative probabilities P(level > k), k = 0..levels-2, taken from
    the softmax: predicting 3 for a true 0 costs more than predicting 1, unlike cross-entropy, and
    the head's outputs stay ordinary per-level logits."""
    p = F.softmax(logits.float(), dim=1)
    above = torch.flip(torch.cumsum(torch.flip(p, [1]), 1), [1])[:, 1:].clamp(1e-6, 1 - 1e-6)  # P(>k)
    target = (y[:, None] > torch.arange(logits.shape[1] - 1, device=y.device)[None]).float()
    loss = F.binary_cross_entropy(above, target, reduction="none").sum(1)
    if weight is not None:
        w = weight[y]
        return (loss * w).sum() / w.sum()
    return loss.mean()


def make_loss(name: str, train_y: np.ndarray, levels: int, device: torch.device, gamma: float = 2.0) -> list[LossFn]:
    """One loss function per state (column of train_y), with that state's class weights."""
    if name not in LOSSES:
        raise ConfigError(f"unknown loss '{name}'; fix: use one of {', '.join(LOSSES)}")
    fns: list[LossFn] = []
    for s in range(train_y.shape[1]):
        w = None if name == "ce" else torch.as_tensor(class_weights(train_y[:, s], levels), device=device)
        if name in ("weighted_ce", "ce"):
            fns.append(lambda lg, y, w=w: F.cross_entropy(lg.float(), y, weight=w))
        elif name == "focal":
            fns.append(lambda lg, y, w=w: focal_loss(lg, y, w, gamma=gamma))
        else:
            fns.append(lambda lg, y, w=w: ordinal_loss(lg, y, w))
    return fns


def sample_weights(train_y: np.ndarray, levels: int) -> np.ndarray:
    """For weighted sampling: each clip's mean, over states, of its level's class weight."""
    per_state = [class_weights(train_y[:, s], levels)[train_y[:, s]] for s in range(train_y.shape[1])]
    return np.mean(per_state, axis=0)
