"""`embed run`: every pending clip of a dataset into its backbones' stores, on this machine or a dask
cluster, under the stores' writer lock. The one library call the command makes."""

from __future__ import annotations

from dataclasses import dataclass, field

from embed.cache import CacheStore
from embed.cluster import ClusterChoice
from embed.layouts import read_dataset
from embed.locking import writer_lock
from embed.manifest import load_manifest
from embed.memory import CHUNK_FRAMES, CHUNK_MB, apply_allocator_policy
from embed.run_report import RunReport
from embed.stores import StoreQuery, split_per_store


@dataclass(frozen=True)
class EmbedRunOptions:
    """What `embed run` is told. `store.backbone` may name several backbones, comma-separated (one
    decode and detection feeds them all; `store.weights` then one value or one per backbone);
    `clips_in_flight` None: the device's default (embed.clips_in_flight); a `cluster` choice: on
    dask workers instead of this process."""

    store: StoreQuery = field(default_factory=StoreQuery)
    device: str | None = "auto"
    limit: int | None = None
    batch_size: int = 64
    chunk_frames: int = CHUNK_FRAMES
    chunk_mb: float = CHUNK_MB
    allow_truncated: bool = False
    clips_in_flight: int | None = None
    cluster: ClusterChoice = field(default_factory=ClusterChoice)
    progress: bool = True


def run_embedding(options: EmbedRunOptions) -> RunReport:
    """Embed every clip of the dataset into each backbone's store, skipping clips complete and
    unchanged in every store and continuing part-written ones. Applies stage one's allocator policy
    (embed.memory) to this process. A bad manifest, label file or option is a ConfigError before
    any network is loaded; the networks, threads and model stage it starts end before it returns."""
    apply_allocator_policy()
    q = options.store
    manifest = load_manifest(q.manifest)
    name, _ = manifest.dataset(q.dataset)
    index = read_dataset(manifest, name)
    # Imported only now: a mistake in the manifest or labels is reported before seconds of torch imports.
    from embed.clip_embedding import ClipTargets
    from embed.embedder import EmbedSpec

    names = q.backbones or ["inception"]
    spec = EmbedSpec(
        tuple(names),
        tuple(split_per_store(q.weights, len(names), "weights")),
        options.device,
        detector=q.detector().as_dict(),
        max_fps=q.max_fps,
        batch_size=options.batch_size,
        chunk_frames=options.chunk_frames,
        allow_truncated=options.allow_truncated,
        chunk_mb=options.chunk_mb,
    )
    configs, faces_config = spec.configs()  # the stores' names; on a cluster only the workers build networks
    stores = [CacheStore.create(manifest.cache_path, name, c) for c in configs]
    faces = CacheStore.create(manifest.cache_path, name, faces_config)
    targets = ClipTargets(stores, faces)
    with writer_lock([s.path for s in [*stores, faces]]):
        if options.cluster:
            from embed.distributed import embed_dataset_on_cluster

            report = embed_dataset_on_cluster(
                index,
                spec,
                targets,
                cluster=options.cluster,
                limit=options.limit,
                progress=options.progress,
                clips_in_flight=_in_flight(options),
            )
        else:
            report = _embed_here(index, spec, targets=targets, options=options)
    report.weights = [c["weights"] for c in configs]
    return report


def _in_flight(options: EmbedRunOptions) -> int:
    """Clips embedded at once (per worker on a local cluster): the option, else the device's default."""
    from embed.clips_in_flight import default_clips_in_flight
    from embed.devices import resolve_device

    return options.clips_in_flight or default_clips_in_flight(resolve_device(options.device))


def _embed_here(index, spec, *, targets, options: EmbedRunOptions) -> RunReport:
    from embed.local_run import embed_dataset
    from embed.model_stage import ModelStage

    in_flight = _in_flight(options)
    stage = ModelStage() if in_flight > 1 else None
    embedder = spec.build(stage=stage)
    try:
        return embed_dataset(
            index, embedder, targets, limit=options.limit, progress=options.progress, clips_in_flight=in_flight
        )
    finally:
        if stage is not None:
            stage.close()
        embedder.close()
