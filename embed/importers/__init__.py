"""Importers: features other tools extracted, per frame, into a normal cache store.

An importer is one registered class in one file of this package (imported automatically): it finds
the feature files under a source path that are named after a dataset's clips, and reads one clip's
features. `embed.importing` does the rest (matching, the store, fingerprints, failures), so every
format gets the same contract as a backbone's store (docs/architecture.md, "Imported features").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from embed.errors import ClipError
from embed.plugins import Registry

_IMPORTERS: Registry[type[Importer]] = Registry("embed.importers", "import format")
# Bump when an importer changes what it writes for the same files and options (a new store key).
IMPORT_VERSION = 1
register_importer = _IMPORTERS.register
importer_names = _IMPORTERS.names
get_importer = _IMPORTERS.get


@dataclass
class FeatureFile:
    """Where one clip's features are: a file, a dataset inside it (member), and companion files."""

    name: str  # the clip id or video file stem the file is named after
    path: Path
    member: str | None = None
    parts: list[Path] = field(default_factory=list)  # further files read with this one (npy features)
    companions: dict[str, Path] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)


@dataclass
class Features:
    """One clip's imported frames, in the cache's terms."""

    values: np.ndarray  # (T, D)
    timestamps: np.ndarray  # (T,) seconds, increasing
    face_prob: np.ndarray  # (T,) 0 where the tool found no face (masked like stage one's faceless frames)
    boxes: np.ndarray  # (T, 4) source pixels, NaN where unknown
    columns: list[str]  # what each of the D values is (or feature:width for unnamed vectors)


class Importer(ABC):
    name: ClassVar[str]
    describe: ClassVar[str]  # one line for --help and errors

    def __init__(self, columns: list[str] | None = None, fps: float | None = None):
        self.columns, self.fps = columns, fps
        self.dropped: list[str] = []  # columns some files have and others lack, left out of the store

    def options(self) -> dict:
        """What, besides the files, decides the store's content: part of its key."""
        return {"columns": self.columns, "fps": self.fps}

    @abstractmethod
    def find(self, src: Path, names: set[str]) -> tuple[dict[str, FeatureFile], list[str]]:
        """The feature files under src named after one of `names` (name -> file), and the files
        named after none of them. A ConfigError when src cannot be read at all."""

    @abstractmethod
    def read(self, f: FeatureFile) -> Features:
        """One clip's features; a ClipError naming the file (and line) when it cannot be used."""

    def frame_times(self, frame_numbers: np.ndarray, where: str, known: np.ndarray | None = None) -> np.ndarray:
        """Timestamps from the file when it has usable ones, else frame number / --fps (from the first)."""
        if known is not None and plausible_times(known):
            return known.astype(np.float32)
        if not self.fps:
            why = "has no timestamps" if known is None else "has timestamps that do not advance"
            raise ClipError(f"{where}: {why}; fix: pass --fps with the video's frame rate")
        return ((frame_numbers - frame_numbers[0]) / self.fps).astype(np.float32)


def plausible_times(ts: np.ndarray) -> bool:
    """Finite, strictly increasing, and at least one frame a second (else they are not video time:
    OpenFace writes 0 for every frame of an image sequence)."""
    if len(ts) < 2:
        return len(ts) == 1 and bool(np.isfinite(ts).all())
    steps = np.diff(ts)
    return bool(np.isfinite(ts).all() and (steps > 0).all() and np.median(steps) <= 1.0)
