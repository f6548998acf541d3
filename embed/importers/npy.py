"""One (T, D) NumPy array per video: `<clip>.npy`, or v-iashin/video_features' `<video>_<feature>.npy`
with its `<video>_timestamps_ms.npy` / `<video>_fps.npy` companions when present.

--columns picks feature names when a folder holds several (video_features writes `_rgb` and `_flow`
side by side for i3d): the chosen ones are joined per frame, in the order given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embed.errors import ClipError, ConfigError
from embed.importers import FeatureFile, Features, Importer, register_importer

COMPANIONS = ("timestamps_ms", "fps")
PLAIN = "array"  # the feature name of a plain <clip>.npy


def _match(stem: str, names: set[str]) -> tuple[str, str] | None:
    """(clip name, feature) a file stem is named after; the longest clip name wins (ids may share prefixes)."""
    if stem in names:
        return stem, PLAIN
    for k in range(len(stem) - 1, 0, -1):
        if stem[k] == "_" and stem[:k] in names:
            return stem[:k], stem[k + 1 :]
    return None


@register_importer
class NpyImporter(Importer):
    name = "npy"
    describe = "one (T, D) .npy per video (video_features' <video>_<feature>.npy naming understood)"

    def find(self, src: Path, names: set[str]) -> tuple[dict[str, FeatureFile], list[str]]:
        if not src.is_dir():
            raise ConfigError(f"{src}: not a folder; fix: pass the folder holding the .npy files")
        per_clip: dict[str, dict[str, Path]] = {}
        # Each extraction writes its own timestamps/fps beside its features (one folder per feature
        # type in video_features): a clip's are taken from the folder of its first chosen feature.
        companions: dict[tuple[str, Path], dict[str, Path]] = {}
        unmatched = []
        for path in sorted(src.rglob("*.npy")):
            hit = _match(path.stem, names)
            if hit is None:
                unmatched.append(str(path))
                continue
            name, feature = hit
            if feature in COMPANIONS:
                companions.setdefault((name, path.parent), {})[feature] = path
            elif feature in per_clip.setdefault(name, {}):
                raise ConfigError(
                    f"{path}: a second {feature} file for {name} (also {per_clip[name][feature]}); fix: keep one per video"
                )
            else:
                per_clip[name][feature] = path
        features = sorted({f for files in per_clip.values() for f in files})
        chosen = self.columns or features
        if not self.columns and len(features) > 1:
            raise ConfigError(
                f"{src}: holds several features ({', '.join(features)}); "
                f"fix: pick with --columns, e.g. --columns {features[0]}"
            )
        if missing := [c for c in chosen if c not in features]:
            raise ConfigError(
                f"{src}: no {missing[0]} files (features here: {', '.join(features) or 'none'}); fix: correct --columns"
            )
        found = {}
        for name, files in per_clip.items():
            parts = [files.get(c) for c in chosen]
            present = [p for p in parts if p is not None]
            if not present:  # only features not chosen
                unmatched += [str(p) for p in files.values()]
                continue
            found[name] = FeatureFile(
                name, present[0], None, parts=parts, companions=companions.get((name, present[0].parent), {})
            )
        return found, unmatched

    def read(self, f: FeatureFile) -> Features:
        chosen = self.columns or [None]
        if any(p is None for p in f.parts):
            gone = [c for c, p in zip(chosen, f.parts, strict=True) if p is None]
            raise ClipError(f"{f.path}: no {gone[0]} file beside it for {f.name}; fix: extract that feature too")
        arrays = [_load(p) for p in f.parts]
        if len({len(a) for a in arrays}) > 1:
            raise ClipError(
                f"{f.path}: its features have different frame counts "
                f"({', '.join(str(len(a)) for a in arrays)}); fix: extract them at the same fps"
            )
        values = np.concatenate(arrays, axis=1) if len(arrays) > 1 else arrays[0]
        t = len(values)
        known = None
        if "timestamps_ms" in f.companions:
            known = _load(f.companions["timestamps_ms"], ndim=1) / 1000.0
        elif "fps" in f.companions:
            fps = float(_load(f.companions["fps"], ndim=None).reshape(-1)[0])
            known = np.arange(t) / fps if fps > 0 else None
        if known is not None and len(known) != t:
            raise ClipError(
                f"{f.companions.get('timestamps_ms')}: {len(known)} timestamps for {t} frames; "
                f"fix: keep the timestamps written with the features"
            )
        timestamps = self.frame_times(np.arange(t), str(f.path), known)
        # A frame the tool could not compute (NaN/inf) is masked like a frame without a face.
        finite = np.isfinite(values).all(axis=1)
        columns = [
            f"{Path(p).stem[len(f.name) + 1 :] or 'array'}:{a.shape[1]}" for p, a in zip(f.parts, arrays, strict=True)
        ]
        return Features(
            np.where(finite[:, None], values, 0).astype(np.float32),
            timestamps,
            finite.astype(np.float32),
            boxes=np.full((t, 4), np.nan, np.float32),
            columns=columns,
        )


def _load(path: Path, ndim: int | None = 2) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ClipError(f"{path}: not a readable .npy file ({str(e).splitlines()[0]}); fix: re-extract it") from None
    if ndim is not None and a.ndim != ndim:
        raise ClipError(
            f"{path}: shape {list(a.shape)}, expected {'(T, D)' if ndim == 2 else '(T,)'}; fix: save one row per frame"
        )
    if not np.issubdtype(a.dtype, np.number):
        raise ClipError(f"{path}: dtype {a.dtype} is not numeric; fix: save the features as numbers")
    return a.astype(np.float64)
