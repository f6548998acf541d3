"""Dataset layouts: each turns a dataset root into clip records. Register with @register_layout."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from embed.errors import ConfigError
from embed.plugins import import_submodules

if TYPE_CHECKING:
    from embed.manifest import Manifest

VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".webm", ".m4v")


@dataclass(frozen=True)
class Clip:
    clip_id: str
    path: Path | None  # None: labelled, but where its video would be is unknown (absent clips only)
    split: str  # "" when the labels do not say (DAiSEE's AllLabels.csv for a clip not on disk)
    labels: dict[str, int] | None  # None: on disk without a label row
    subject: str | None = None  # who is filmed, when the layout knows (bootstrap intervals resample subjects)


@dataclass
class DatasetIndex:
    name: str
    root: Path
    clips: list[Clip] = field(default_factory=list)  # every clip on disk, sorted by id
    # Labelled clips without a video file. Stage one cannot embed them, but features imported from
    # elsewhere (OpenFace CSVs of a dataset whose videos are not here) can still be trained on.
    absent: list[Clip] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)  # video file, but no label row

    @property
    def missing_on_disk(self) -> list[str]:
        return sorted(c.clip_id for c in self.absent)

    def subjects(self) -> dict[str, list[str]]:
        """Each split's subjects (clips on disk and absent ones), sorted; empty when unknown."""
        out: dict[str, set[str]] = {}
        for c in self.clips + self.absent:
            if c.subject and c.split:
                out.setdefault(c.split, set()).add(c.subject)
        return {k: sorted(v) for k, v in sorted(out.items())}

    def leaking_subjects(self) -> dict[str, list[str]]:
        """Subjects filmed in more than one split: {subject: splits}. Clips of one person in Train and
        Test let a model recognise the person instead of the state (subject leakage)."""
        splits: dict[str, set[str]] = {}
        for split, subjects in self.subjects().items():
            for s in subjects:
                splits.setdefault(s, set()).add(split)
        return {s: sorted(v) for s, v in sorted(splits.items()) if len(v) > 1}

    def split(self, split: str, with_absent: bool = False) -> list[Clip]:
        """The split's clips on disk (and, with_absent, its labelled clips that are not)."""
        return [c for c in self.clips + (self.absent if with_absent else []) if c.split == split]


LayoutReader = Callable[["Manifest", str, Path], DatasetIndex]
_LAYOUTS: dict[str, LayoutReader] = {}


def register_layout(name: str) -> Callable[[LayoutReader], LayoutReader]:
    def deco(fn: LayoutReader) -> LayoutReader:
        _LAYOUTS[name] = fn
        return fn

    return deco


# Zarr v3 node names may not contain "/" or start with "__"; ids become group names in the cache.
_BAD_ID = re.compile(r"(^__)|/|^\.{1,2}$|^$")


def check_clip_id(clip_id: str, where: str) -> str:
    if _BAD_ID.search(clip_id):
        raise ConfigError(f"{where}: clip id {clip_id!r} is not usable as a cache key; fix: rename the clip")
    return clip_id


def read_dataset(manifest: Manifest, name: str | None = None, generate: bool = True) -> DatasetIndex:
    """Index a dataset of the manifest (generating the built-in sample first if it is missing and
    `generate` is set; stage two passes False: it reads labels and never writes videos)."""
    import_submodules("embed.layouts")
    name, spec = manifest.dataset(name)
    if spec.sample is not None and generate:
        from embed.sample import ensure_sample

        ensure_sample(manifest, name)
    root = manifest.dataset_root(name)
    return _LAYOUTS[spec.layout](manifest, name, root)
