"""`embed export`: a store's complete clips as files any tool reads without zarr.

HDF5 (one file; readable with h5py, MATLAB, R): root attributes `format`, `dataset`, `key`, `config`
(the store's config as JSON) and `states`; a group per clip, `clips/<clip>/` with `embeddings` (T, D)
in the store's dtype, `timestamps` (T,) seconds, `face_prob` (T,) and `boxes` (T, 4), and as
attributes its `split`, `frames`, `faces`, `duration`, `source` (JSON) and, when the manifest labels
it, `label_<state>`. `embed import hdf5` of this file gives back an equal store.

npy (a folder): `<clip>.npy` (T, D) and `<clip>_timestamps_ms.npy` (video_features' naming) per clip,
and `index.csv` with clip, split, frames, faces and the labels. Faceless frames are the store's rows
as they are (zeros from a backbone); their mask is in HDF5 only.

Both are written under a temporary name and renamed when complete: an interrupted export never
leaves a file that looks whole.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from embed.cache import ARRAYS, CacheStore
from embed.errors import ConfigError
from embed.layouts import DatasetIndex, read_dataset
from embed.manifest import SPLITS, load_manifest
from embed.stores import find_store

EXPORT_FORMAT = "affectseq-export/1"
FORMATS = ("hdf5", "npy")


@dataclass(frozen=True)
class ExportOptions:
    """What `embed export` is told: which store (a backbone or import name, weights, key prefix), the
    format (hdf5 or npy), where to write, and optionally one split."""

    backbone: str
    fmt: str
    out: Path
    manifest: Path = Path("data_manifest.yaml")
    dataset: str | None = None
    weights: str | None = None
    key: str | None = None
    split: str | None = None
    progress: bool = True


def export_features(options: ExportOptions) -> dict:
    """A store's complete clips written to one HDF5 file or a folder of npy files, readable without
    zarr or affectseq; returns what was written (`embed export --json`)."""
    if options.split is not None and options.split not in SPLITS:
        raise ConfigError(f"--split {options.split!r}: fix: use one of {', '.join(SPLITS)}")
    m = load_manifest(options.manifest)
    name, _ = m.dataset(options.dataset)
    store = find_store(m.cache_path, name, options.backbone, weights=options.weights, key=options.key)
    index = read_dataset(m, name, generate=False)
    return export_store(store, index, m.states, options=options)


def export_store(store: CacheStore, index: DatasetIndex, states: list[str], *, options: ExportOptions) -> dict:
    fmt, out, split, progress = options.fmt, options.out, options.split, options.progress
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: fix: use one of {', '.join(FORMATS)}")
    if not store.dim:
        raise ConfigError(f"{store.path}: a face-track store holds no features to export; fix: pick a backbone store")
    attrs = {k: a for k, a in store.clip_attrs().items() if a.get("complete") is True}
    known = {c.clip_id: c for c in index.clips + index.absent}
    split_of = {k: a.get("split") or (known[k].split if k in known else "") for k, a in attrs.items()}
    clips = sorted(k for k in attrs if split is None or split_of[k] == split)
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = [TextColumn(f"[bold]export {fmt}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("export", total=len(clips))
        blocks = store.iter_arrays(clips, ARRAYS, known_complete=True)
        if fmt == "hdf5":
            _hdf5(
                store,
                states,
                tmp,
                blocks=blocks,
                attrs=attrs,
                split_of=split_of,
                known=known,
                advance=lambda n: bar.advance(task, n),
            )
        else:
            _npy(states, tmp, blocks, attrs=attrs, split_of=split_of, known=known, advance=lambda n: bar.advance(task, n))
    if out.is_dir() and fmt == "npy":
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {"out": str(out), "format": fmt, "store": str(store.path), "clips": len(clips), "split": split}


def _labels(clip: str, known: dict, states: list[str]) -> dict[str, int]:
    c = known.get(clip)
    return {s: int(c.labels[s]) for s in states} if c is not None and c.labels else {}


def _hdf5(
    store: CacheStore, states: list[str], path: Path, blocks, attrs: dict, split_of: dict, known: dict, advance
) -> None:
    import h5py

    with h5py.File(path, "w") as h5:
        h5.attrs.update(
            {
                "format": EXPORT_FORMAT,
                "dataset": store.dataset,
                "key": store.key,
                "config": json.dumps(store.config),
                "states": json.dumps(states),
            }
        )
        root = h5.create_group("clips")
        for ids, raw in blocks:
            for clip in ids:
                g = root.create_group(clip)
                for name in ARRAYS:
                    a = raw[clip][name]
                    g.create_dataset(name, data=a, compression="gzip", shuffle=True, chunks=a.shape if a.size else None)
                a = attrs[clip]
                g.attrs.update(
                    {
                        "split": split_of[clip],
                        "frames": int(a["frames"]),
                        "faces": int(a.get("faces", 0)),
                        "duration": float(a.get("duration", 0.0)),
                        "source": json.dumps(a.get("source")),
                        **{f"label_{s}": v for s, v in _labels(clip, known, states).items()},
                    }
                )
            advance(len(ids))


def _npy(states: list[str], folder: Path, blocks, attrs: dict, split_of: dict, known: dict, advance) -> None:
    folder.mkdir(parents=True)
    rows = []
    for ids, raw in blocks:
        for clip in ids:
            np.save(folder / f"{clip}.npy", raw[clip]["embeddings"])
            np.save(folder / f"{clip}_timestamps_ms.npy", raw[clip]["timestamps"].astype(np.float64) * 1000.0)
            labels = _labels(clip, known, states)
            rows.append(
                {
                    "clip": clip,
                    "split": split_of[clip],
                    "frames": attrs[clip]["frames"],
                    "faces": attrs[clip].get("faces", 0),
                    **{s: labels.get(s, "") for s in states},
                }
            )
        advance(len(ids))
    with open(folder / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["clip", "split", "frames", "faces", *states])
        writer.writeheader()
        writer.writerows(rows)
