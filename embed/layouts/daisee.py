"""DAiSEE tree: DataSet/{Train,Validation,Test}/<subject>/<clip>/<clip>.(avi|mp4) + Labels/*Labels.csv."""

from __future__ import annotations

import logging
from pathlib import Path

from embed.errors import ConfigError
from embed.layouts import VIDEO_SUFFIXES, Clip, DatasetIndex, check_clip_id, register_layout
from embed.layouts.labels import read_label_csv
from embed.manifest import SPLITS, Manifest

log = logging.getLogger(__name__)


def _strip_ext(clip_id: str) -> str:
    # Label files carry the extension (ClipID "1100011002.avi"), sometimes not the one on disk.
    p = Path(clip_id)
    return p.stem if p.suffix.lower() in VIDEO_SUFFIXES else clip_id


def _subject(clip_id: str) -> str | None:
    """A clip not on disk has no subject folder; DAiSEE's ten-digit ids begin with the subject's six."""
    return clip_id[:6] if len(clip_id) == 10 and clip_id.isdigit() else None


def _labels(manifest: Manifest, labels_dir: Path, split: str) -> dict[str, dict[str, int]]:
    path = labels_dir / f"{split}Labels.csv"
    if not path.is_file():
        return {}
    rows = read_label_csv(path, "ClipID", manifest.states, levels=manifest.levels)
    out: dict[str, dict[str, int]] = {}
    for raw_id, row in rows.items():
        clip_id = _strip_ext(raw_id)
        if clip_id in out:
            raise ConfigError(
                f"{path}: line {row['line']}: ClipID {raw_id!r} duplicates another row once the extension "
                f"is dropped; fix: keep one row per clip"
            )
        out[clip_id] = row["labels"]
    return out


@register_layout("daisee")
def read_daisee(manifest: Manifest, name: str, root: Path) -> DatasetIndex:
    data_dir, labels_dir = root / "DataSet", root / "Labels"
    if not data_dir.is_dir():
        raise ConfigError(
            f"{manifest.path}: datasets.{name}.root = {root} has no DataSet/ folder; "
            f"fix: point it at the DAiSEE folder that holds DataSet/ and Labels/"
        )
    all_labels = _labels(manifest, labels_dir, "All")
    index = DatasetIndex(name=name, root=root)
    seen: dict[str, Path] = {}
    for split in SPLITS:
        labels = _labels(manifest, labels_dir, split) or all_labels
        on_disk: dict[str, Path] = {}
        split_dir = data_dir / split
        for video in sorted(split_dir.glob("*/*/*")) if split_dir.is_dir() else []:
            if video.suffix.lower() not in VIDEO_SUFFIXES or not video.is_file():
                continue
            clip_id = check_clip_id(video.stem, str(video))
            if clip_id in seen:
                raise ConfigError(f"{video}: clip id {clip_id} also at {seen[clip_id]}; fix: remove one of the two files")
            seen[clip_id] = on_disk[clip_id] = video
        for clip_id, video in on_disk.items():
            lab = labels.get(clip_id)
            index.clips.append(
                Clip(clip_id, video, split, labels=lab, subject=video.parent.parent.name)
            )  # <subject>/<clip>/
            if lab is None:
                index.unlabelled.append(clip_id)
        if labels is not all_labels:
            index.absent += [
                Clip(c, None, split, labels=labels[c], subject=_subject(c)) for c in sorted(set(labels) - set(on_disk))
            ]
    if all_labels and not any((labels_dir / f"{s}Labels.csv").is_file() for s in SPLITS):
        index.absent = [
            Clip(c, None, "", labels=all_labels[c], subject=_subject(c)) for c in sorted(set(all_labels) - set(seen))
        ]
    index.clips.sort(key=lambda c: c.clip_id)
    if index.missing_on_disk:
        log.warning("%s: %d labelled clips are missing on disk", name, len(index.missing_on_disk))
    if index.unlabelled:
        log.warning("%s: %d clips on disk have no label row", name, len(index.unlabelled))
    return index
