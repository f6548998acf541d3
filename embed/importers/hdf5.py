"""One HDF5 file holding a (T, D) dataset per video.

A clip is a 2-D dataset named after it (`/<clip>` or `/any/group/<clip>`), or a group named after it
holding the features (`--columns NAME`; else `embeddings`; else its only 2-D dataset besides `boxes`)
and optionally `timestamps` (s), `face_prob` and `boxes`, which is what `embed export --format hdf5`
writes (`clips/<clip>/...`): importing an export gives back an equal store. Without timestamps, the
dataset's or group's `fps` attribute, else --fps, times the frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from embed.errors import ClipError, ConfigError
from embed.exporting import EXPORT_FORMAT
from embed.importers import FeatureFile, Features, Importer, register_importer

COMPANIONS = ("timestamps", "face_prob", "boxes")


@register_importer
class Hdf5Importer(Importer):
    name = "hdf5"
    describe = "one HDF5 file with a (T, D) dataset (or a group of arrays) per video"

    def __init__(self, columns: list[str] | None = None, fps: float | None = None):
        if columns and len(columns) > 1:
            raise ConfigError(
                f"--columns {','.join(columns)}: an HDF5 import reads one dataset per clip; "
                f"fix: name one, e.g. --columns embeddings"
            )
        super().__init__(columns, fps)

    def find(self, src: Path, names: set[str]) -> tuple[dict[str, FeatureFile], list[str]]:
        import h5py

        if not src.is_file():
            raise ConfigError(f"{src}: no such file; fix: pass the HDF5 file")
        found: dict[str, FeatureFile] = {}
        unmatched: list[str] = []
        feature = self.columns[0] if self.columns else None
        try:
            with h5py.File(src, "r") as h5:

                def visit(path: str, node) -> None:
                    base = path.rsplit("/", 1)[-1]
                    if isinstance(node, h5py.Group):
                        if base in names:
                            member = _group_member(node, feature)
                            if member is not None:
                                _add(found, base, src, member=f"{path}/{member}")
                        return
                    parent = path.rsplit("/", 2)[-2] if "/" in path else ""
                    if node.ndim == 2 and base in names and parent not in names:
                        _add(found, base, src, member=path)
                    elif parent not in names and base not in COMPANIONS:
                        unmatched.append(f"{src}:{path}")

                h5.visititems(visit)
        except OSError as e:
            raise ConfigError(f"{src}: not a readable HDF5 file ({e}); fix: pass an HDF5 file") from None
        return found, unmatched

    def read(self, f: FeatureFile) -> Features:
        import h5py

        where = f.describe()
        try:
            with h5py.File(f.path, "r") as h5:
                ds = h5[f.member]
                values = ds[...]
                group = ds.parent
                extra = {
                    n: group[n][...]
                    for n in COMPANIONS
                    if n in group and group[n] is not ds and group.name.rsplit("/", 1)[-1] == f.name
                }
                fps = ds.attrs.get("fps", group.attrs.get("fps"))
                exported = json.loads(h5.attrs.get("config", "{}")) if h5.attrs.get("format") == EXPORT_FORMAT else {}
        except (OSError, KeyError) as e:
            raise ClipError(f"{where}: cannot read it ({e}); fix: re-write the file") from None
        if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
            raise ClipError(
                f"{where}: {values.dtype}{list(values.shape)}, expected numbers (T, D); fix: store one row per frame"
            )
        t = len(values)
        for n, shape in (("timestamps", (t,)), ("face_prob", (t,)), ("boxes", (t, 4))):
            if n in extra and extra[n].shape != shape:
                raise ClipError(
                    f"{where}: its {n} is {list(extra[n].shape)}, expected {list(shape)}; fix: keep one per frame"
                )
        known = extra.get("timestamps")
        if known is None and fps:
            known = np.arange(t) / float(fps)
        timestamps = self.frame_times(np.arange(t), where, known)
        finite = np.isfinite(values).all(axis=1)
        face_prob = extra["face_prob"].astype(np.float32) if "face_prob" in extra else finite.astype(np.float32)
        boxes = extra["boxes"].astype(np.float32) if "boxes" in extra else np.full((t, 4), np.nan, np.float32)
        # float16 stays float16 (an exported backbone store comes back bit for bit); the rest is float32.
        dtype = np.float16 if values.dtype == np.float16 else np.float32
        values = np.where(finite[:, None], values, 0).astype(dtype)
        # An export names its store's columns; anything else is described by dataset name and width.
        columns = exported.get("columns")
        if not (isinstance(columns, list) and len(columns) == values.shape[1]):
            columns = [f"{f.member.rsplit('/', 1)[-1]}:{values.shape[1]}"]
        return Features(values, timestamps, np.where(finite, face_prob, 0).astype(np.float32), boxes=boxes, columns=columns)


def _group_member(group, feature: str | None) -> str | None:
    arrays = {k: v for k, v in group.items() if getattr(v, "ndim", 0) == 2 and k != "boxes"}
    if feature:
        return feature if feature in arrays else None
    if "embeddings" in arrays:
        return "embeddings"
    return next(iter(arrays)) if len(arrays) == 1 else None


def _add(found: dict[str, FeatureFile], name: str, src: Path, member: str) -> None:
    if name in found:
        raise ConfigError(f"{src}: two datasets for {name} ({found[name].member}, {member}); fix: keep one per video")
    found[name] = FeatureFile(name, src, member)
