"""What stores hold and whether they are sound: the library side of `embed info`, `verify` and `ls`."""

from __future__ import annotations

from pathlib import Path

from embed.cache import CacheStore, config_key
from embed.errors import ConfigError
from embed.locking import writer_lock
from embed.manifest import load_manifest
from embed.stores import StoreQuery, clip_sources, list_stores, locate_store


def store_info(query: StoreQuery) -> dict:
    """One store's counts: complete, failed and pending clips (the dataset's clips no store run has
    finished or failed), frames, failures, truncated and part-written clips."""
    index, config, path = locate_store(load_manifest(query.manifest), query)
    summary = CacheStore.summary_at(path)
    done = {k for k, a in summary["clips"].items() if a.get("complete") is True}
    failed = {f["clip"] for f in summary["failures"]}
    # An imported store's clips come from feature files, whether or not a video is here.
    sources = index.clips + (index.absent if config.get("importer") else [])
    return {
        "store": str(path),
        "key": config_key(config),
        "backbone": config["backbone"],
        "dim": config["dim"],
        "weights": config.get("weights"),
        "importer": config.get("importer"),
        "complete": summary["complete"],
        "failed": summary["failed"],
        "pending": sum(1 for c in sources if c.clip_id not in done and c.clip_id not in failed),
        "frames": summary["frames"],
        "failures": summary["failures"],
        "truncated": summary.get("truncated", []),
        "partial": summary.get("partial", {}),
        "missing_on_disk": index.missing_on_disk,
        "unlabelled": index.unlabelled,
        "dataset": index.name,
    }


def verify_store(query: StoreQuery, *, repair: bool = False) -> dict:
    """Every complete clip of a store checked (arrays, shapes, dtypes, finite values, the source's
    content hash) and the files a killed zarr write left. With `repair`, under the store's writer
    lock, broken clips are reset to pending (the next run redoes them) and those files removed."""
    index, _, path = locate_store(load_manifest(query.manifest), query)
    if not (path / "zarr.json").is_file():
        raise ConfigError(f"{path}: no embedding store here; fix: run `python -m embed run` first")
    store = CacheStore(path, mode="a")
    sources = clip_sources(index, store)
    complete = store.complete_ids()
    broken = [{"clip": c, "problem": p} for c in complete if (p := store.check_clip(c, sources.get(c)))]
    leftovers = store.partial_files()
    repaired, removed = 0, 0
    if repair and (broken or leftovers):
        with writer_lock([path]):
            for b in broken:
                store.reset(b["clip"])
                repaired += 1
            for f in store.partial_files():
                f.unlink(missing_ok=True)
                removed += 1
    return {
        "store": str(path),
        "checked": len(complete),
        "broken": broken,
        "repaired": repaired,
        "partial_files": [str(f) for f in leftovers],
        "removed_partial_files": removed,
    }


def store_listing(manifest: Path) -> tuple[Path, list[dict]]:
    """(the manifest's cache folder, every store under it with its config, counts and bytes on disk)."""
    m = load_manifest(manifest)
    rows = []
    for s in list_stores(m.cache_path):
        summary = s.summary()
        rows.append(
            {
                "store": str(s.path),
                "dataset": s.dataset,
                "key": s.key,
                "config": s.config,
                "complete": summary["complete"],
                "failed": summary["failed"],
                "frames": summary["frames"],
                "bytes": sum(f.stat().st_size for f in s.path.rglob("*") if f.is_file()),
            }
        )
    return m.cache_path, rows
