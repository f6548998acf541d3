"""`embed import`: features another tool extracted, matched to a dataset's clips and written into a
normal cache store that stage two trains on unchanged (docs/architecture.md, "Imported features").

The store's config names the importer, its options and the exact column list; each clip records its
source file's fingerprint, so a re-import skips unchanged files and redoes changed ones. A file that
cannot be used fails its clip alone (recorded, exit 1), and a clip is marked complete only by the
last write of the cache's commit protocol, so nothing half-read is ever complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from embed.cache import CacheStore, ClipData, source_fingerprint, source_unchanged
from embed.clip_writer import write_clip
from embed.errors import ClipError, ConfigError
from embed.importers import IMPORT_VERSION, FeatureFile, Features, Importer, get_importer
from embed.layouts import Clip, read_dataset
from embed.locking import writer_lock
from embed.manifest import load_manifest

log = logging.getLogger(__name__)
FLOAT16_MAX = 65504.0  # stage two holds features as float16 in memory (sequence.data)


@dataclass
class ImportReport:
    store: str | None = None
    backbone: str = ""
    dim: int = 0
    columns: list[str] = field(default_factory=list)
    dropped_columns: list[str] = field(default_factory=list)  # not in every file, so left out
    imported: int = 0
    skipped: int = 0
    complete: int = 0
    failures: list[dict] = field(default_factory=list)
    unmatched_files: list[str] = field(default_factory=list)
    missing_clips: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "store": self.store,
            "backbone": self.backbone,
            "dim": self.dim,
            "columns": self.columns,
            "dropped_columns": self.dropped_columns,
            "complete": self.complete,
            "imported": self.imported,
            "skipped": self.skipped,
            "failed": len(self.failures),
            "failures": self.failures,
            "unmatched_files": self.unmatched_files,
            "missing_clips": self.missing_clips,
        }

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def import_config(importer: Importer, name: str, first: Features) -> dict:
    """The store config: what the store key covers (the importer, its options, the columns found)."""
    return {
        "backbone": name,
        "importer": importer.name,
        "options": importer.options(),
        "columns": first.columns,
        "dim": int(first.values.shape[1]),
        "dtype": "float16" if first.values.dtype == np.float16 else "float32",
        "import_version": IMPORT_VERSION,
    }


def _files(f: FeatureFile) -> list[str]:
    return [str(p) for p in (f.path, *(p for p in f.parts if p is not None and p != f.path), *f.companions.values())]


def _source(f: FeatureFile) -> dict:
    return {**source_fingerprint(f.path), "path": str(f.path), "member": f.member, "files": _files(f)}


def _unchanged(f: FeatureFile, recorded: dict | None) -> bool:
    return (
        bool(recorded)
        and recorded.get("member") == f.member
        and recorded.get("path") == str(f.path)
        and recorded.get("files") == _files(f)
        and source_unchanged(f.path, recorded)
    )


def _check(features: Features, config: dict, where: str) -> None:
    if features.columns != config["columns"]:
        raise ClipError(
            f"{where}: columns differ from the store's (first difference: "
            f"{_first_difference(features.columns, config['columns'])}); fix: extract every video with "
            f"the same tool version and options, or narrow --columns to what all files have"
        )
    big = np.abs(features.values[features.face_prob > 0]).max(initial=0.0)
    if big > FLOAT16_MAX:
        raise ClipError(
            f"{where}: a value of {big:.3g} is beyond float16 (what training holds in memory); "
            f"fix: rescale the features before importing"
        )


def _first_difference(a: list[str], b: list[str]) -> str:
    for x, y in zip(a, b, strict=False):
        if x != y:
            return f"{x} here, {y} in the store"
    return f"{len(a)} columns here, {len(b)} in the store"


@dataclass(frozen=True)
class ImportOptions:
    """What `embed import` is told: the format (an importer's name), the folder or file of features,
    the dataset, the name stage two knows the store by (default: the format), the importer's
    `columns` and the frame rate for files without timestamps."""

    fmt: str
    src: Path
    manifest: Path = Path("data_manifest.yaml")
    dataset: str | None = None
    name: str | None = None
    columns: list[str] | None = None
    fps: float | None = None
    progress: bool = True


def import_features(options: ImportOptions) -> ImportReport:
    """Every feature file of `src` matched to a clip and written into the import's store (through the
    same commit protocol as stage one); unchanged files are skipped on a re-import."""
    fmt, src, dataset, progress = options.fmt, options.src, options.dataset, options.progress
    manifest = load_manifest(options.manifest)
    importer = get_importer(fmt)(options.columns, options.fps)
    name = options.name or fmt
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(
            f"--name {name!r}: letters, digits, - and _ only (it names the store); fix: e.g. --name openface_gaze"
        )
    ds, _ = manifest.dataset(dataset)
    index = read_dataset(manifest, ds)
    clips = index.clips + [c for c in index.absent if c.split]
    by_name: dict[str, Clip] = {}
    for c in clips:  # a file is named after the clip id or after its video file without extension
        by_name.setdefault(c.clip_id, c)
        if c.path is not None:
            by_name.setdefault(c.path.stem, c)
    files, unmatched = importer.find(Path(src), set(by_name))
    if not files and not unmatched:  # a mistyped or wrong folder must not read as an import of nothing
        raise ConfigError(
            f"{src}: no {fmt} feature file in it ({importer.describe}); fix: pass the folder (or file) "
            f"the tool wrote its output to, or the --format that matches it"
        )
    per_clip: dict[str, FeatureFile] = {}
    for n, f in sorted(files.items()):
        clip = by_name[n].clip_id
        if clip in per_clip:
            raise ConfigError(
                f"{f.describe()}: a second file for clip {clip} (also {per_clip[clip].describe()}); fix: keep one per clip"
            )
        per_clip[clip] = f
    if importer.dropped:
        log.warning(
            "%d columns are not in every file and are left out (first: %s); an older OpenFace release made some files?",
            len(importer.dropped),
            importer.dropped[0],
        )
    report = ImportReport(
        backbone=name,
        unmatched_files=unmatched,
        dropped_columns=importer.dropped,
        missing_clips=sorted(c.clip_id for c in clips if c.clip_id not in per_clip),
    )
    if unmatched:
        log.warning("%d feature files match no clip of %s (first: %s)", len(unmatched), ds, unmatched[0])
    if report.missing_clips:
        log.warning(
            "%d clips of %s have no feature file (first: %s)", len(report.missing_clips), ds, report.missing_clips[0]
        )
    split_of = {c.clip_id: c.split for c in clips}
    first, early = _first_readable(importer, per_clip)
    if first is None:
        report.failures = [{"clip": c, "error": e} for c, e in early.items()]
        return report
    store = CacheStore.create(manifest.cache_path, ds, import_config(importer, name, first[1]))
    report.store, report.dim, report.columns = str(store.path), store.dim, store.config["columns"]
    log.info("importing into %s", store.path)
    columns_ = [
        TextColumn("[bold]import"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[clip]}"),
        TimeElapsedColumn(),
    ]
    with writer_lock([store.path]), Progress(*columns_, disable=not progress) as bar:
        task = bar.add_task("import", total=len(per_clip), clip="")
        for clip, f in sorted(per_clip.items()):
            bar.update(task, clip=clip)
            attrs = store.attrs_of(clip)
            if attrs and attrs.get("complete") is True and _unchanged(f, attrs.get("source")):
                report.skipped += 1
            else:
                try:
                    if clip in early:
                        raise ClipError(early[clip])
                    features = first[1] if clip == first[0] else importer.read(f)
                    _check(features, store.config, f.describe())
                    data = ClipData(features.values, features.timestamps, features.face_prob, boxes=features.boxes)
                    write_clip(store, clip, data, source=_source(f), extra={"split": split_of[clip]})
                    report.imported += 1
                except ClipError as e:
                    store.record_failure(clip, str(e), _source(f))
                    report.failures.append({"clip": clip, "error": str(e)})
            bar.advance(task)
    report.complete = len([c for c in store.complete_ids() if c in per_clip])
    return report


def _first_readable(
    importer: Importer, per_clip: dict[str, FeatureFile]
) -> tuple[tuple[str, Features] | None, dict[str, str]]:
    """The first clip whose file reads (its columns, width and dtype make the store's config, so
    the key), and the errors of the files tried before it."""
    early: dict[str, str] = {}
    for clip, f in sorted(per_clip.items()):
        try:
            return (clip, importer.read(f)), early
        except ClipError as e:
            early[clip] = str(e)
    return None, early
