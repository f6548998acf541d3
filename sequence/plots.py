"""PNG plots of what people would rather see than read: confusion matrices, curves, timelines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embed.pyplot import pyplot


def confusion_png(path: Path, state: str, confusion: list[list[int]], title: str) -> None:
    """The counts as a heat map with each cell's number, as scikit-learn's ConfusionMatrixDisplay
    draws it (matplotlib alone: importing scikit-learn for it cost every training 1-2 s)."""
    plt = pyplot()
    c = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    image = ax.imshow(c, cmap="Blues", vmin=0, vmax=max(int(c.max()), 1))
    middle = (c.max() + c.min()) / 2
    for (i, j), v in np.ndenumerate(c):
        ax.text(j, i, str(v), ha="center", va="center", color=image.cmap(0 if v > middle else 256))
    ax.set_xticks(range(len(c)))
    ax.set_yticks(range(len(c)))
    ax.set_title(f"{state}: {title}", fontsize=9)
    ax.set_xlabel("predicted level")
    ax.set_ylabel("true level")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves_png(path: Path, history: list[dict], best_epoch: int) -> None:
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.plot(epochs, [h["train_loss"] for h in history], label="train")
    a.plot(epochs, [h["val_loss"] for h in history], label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel("loss (sum over states)")
    b.plot(epochs, [h["val_macro_f1"] for h in history], label="validation macro-F1 (mean of states)")
    b.plot(epochs, [h["val_accuracy"] for h in history], label="validation accuracy (mean of states)")
    b.set_xlabel("epoch")
    b.set_ylim(0, 1)
    for ax in (a, b):
        ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch {best_epoch}")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def timeline_png(path: Path, centers: np.ndarray, probs: dict[str, np.ndarray], title: str) -> None:
    """Each state's most likely level (steps) and expected level (line) over the video."""
    plt = pyplot()
    states = list(probs)
    fig, axes = plt.subplots(len(states), 1, figsize=(9, 1.7 * len(states) + 0.6), sharex=True)
    for ax, s in zip(np.atleast_1d(axes), states, strict=True):
        p = probs[s]
        levels = np.arange(p.shape[1])
        ax.step(centers, p.argmax(1), where="mid", label="most likely level")
        ax.plot(centers, p @ levels, alpha=0.7, label="expected level")
        ax.set_ylim(-0.3, p.shape[1] - 0.7)
        ax.set_yticks(levels)
        ax.set_ylabel(s, fontsize=9)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="upper right")
    np.atleast_1d(axes)[0].set_title(title, fontsize=9)
    np.atleast_1d(axes)[-1].set_xlabel("time (s, window centre)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def by_subject_png(path: Path, rows: list[dict], states: list[str], title: str) -> None:
    """Accuracy per test subject and state, as grouped bars (subjects along x)."""
    plt = pyplot()
    subjects = [r["subject"] for r in rows]
    x = np.arange(len(subjects))
    width = 0.8 / max(len(states), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(subjects) * len(states) / 2 + 2), 3.6))
    for k, s in enumerate(states):
        ax.bar(x + (k - (len(states) - 1) / 2) * width, [r[f"{s}_accuracy"] for r in rows], width, label=s)
    ax.set_xticks(x, [f"{r['subject']}\n({r['clips']})" for r in rows], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    ax.set_xlabel("subject (test clips)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=len(states))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reference_png(path: Path, rows: list[dict], states: list[str], title: str) -> None:
    """Ours (with its 95 % interval) against the published accuracy, per experiment, one panel per state."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(states), figsize=(4 * len(states), 3.6), sharey=True, squeeze=False)
    for ax, s in zip(axes[0], states, strict=True):
        mine = [r for r in rows if r["state"] == s]
        x = np.array([r["experiment"] for r in mine])
        acc = np.array([r["accuracy"] for r in mine])
        err = np.array(
            [
                [a - r["ci_low"] for a, r in zip(acc, mine, strict=True)],
                [r["ci_high"] - a for a, r in zip(acc, mine, strict=True)],
            ]
        )
        ax.errorbar(x, acc, yerr=err, fmt="o", capsize=3, label="ours, 95 % CI")
        ax.scatter(x, [r["published_accuracy"] for r in mine], marker="x", color="C3", zorder=3, label="published")
        ax.set_title(s)
        ax.set_xlabel("experiment")
        ax.set_xticks(x)
    axes[0][0].set_ylabel("test accuracy %")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
