"""Generic layout: one CSV (relative to root) with columns path, split and one per state, and
optionally subject (who is filmed: bootstrap intervals then resample subjects, and leakage is checked)."""

from __future__ import annotations

from pathlib import Path

from embed.errors import ConfigError
from embed.layouts import Clip, DatasetIndex, check_clip_id, register_layout
from embed.layouts.labels import read_label_csv
from embed.manifest import SPLITS, Manifest


@register_layout("csv")
def read_csv_layout(manifest: Manifest, name: str, root: Path) -> DatasetIndex:
    spec = manifest.datasets[name]
    if not spec.csv:
        raise ConfigError(
            f"{manifest.path}: datasets.{name} has layout csv but no 'csv' key; fix: add csv: <labels file relative to root>"
        )
    csv_path = root / spec.csv
    if not csv_path.is_file():
        raise ConfigError(f"{manifest.path}: datasets.{name}.csv = {csv_path} does not exist; fix: correct the path")
    rows = read_label_csv(
        csv_path, "path", manifest.states, levels=manifest.levels, extra_columns=("split",), optional_columns=("subject",)
    )
    index = DatasetIndex(name=name, root=root)
    for rel, row in rows.items():
        if row["split"] not in SPLITS:
            raise ConfigError(
                f"{csv_path}: line {row['line']}: split {row['split']!r} is not one of {', '.join(SPLITS)}; "
                f"fix: correct the value"
            )
        # The id is the path relative to root without its suffix: stems alone collide in arbitrary trees.
        clip_id = check_clip_id(str(Path(rel).with_suffix("")).replace("/", "--"), f"{csv_path}:{row['line']}")
        video = root / rel
        clip = Clip(clip_id, video, row["split"], labels=row["labels"], subject=row["subject"])
        (index.clips if video.is_file() else index.absent).append(clip)
    index.clips.sort(key=lambda c: c.clip_id)
    return index
