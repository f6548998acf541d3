"""A training run end to end (cache -> data -> fit -> metrics -> run folder), once or per seed, and
re-evaluation of a finished run. Grids of runs: sequence.grids."""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from embed.cache import CacheStore
from embed.devices import resolve_device
from embed.errors import ConfigError
from embed.layouts import read_dataset
from embed.manifest import Manifest, load_manifest
from sequence import plots
from sequence.config import TrainConfig, TrainSettings, config_from_options, parse_seeds
from sequence.data import FramePolicy, LoadReport, SequenceSet, load_splits, train_subset
from sequence.folds import Fold
from sequence.fusion import FusedStore, open_input, reopen_input
from sequence.heads import build_head, head_class, resolve_params
from sequence.metrics import INTERVAL_METRICS, by_subject, evaluate, majority_levels
from sequence.run import Run
from sequence.runs import (
    create_run_dir,
    finish_run,
    mean_sd,
    save_model,
    write_csv,
    write_json,
    write_yaml,
)
from sequence.train import EpochLog, fit, predict_probs
from sequence.uncertainty import intervals, unit

log = logging.getLogger(__name__)
SPLITS = ("Train", "Validation", "Test")
DataMemo = dict[tuple, tuple[dict[str, SequenceSet], LoadReport]]


Input = CacheStore | FusedStore


def _load(
    manifest: Manifest, dataset: str, store: Input, policy: FramePolicy, memo: DataMemo | None, stream: bool | None = None
) -> tuple[dict[str, SequenceSet], LoadReport]:
    key = (str(store.path), policy, stream)
    if memo is not None and key in memo:
        return memo[key]
    index = read_dataset(manifest, dataset, generate=False)
    data, report = load_splits(store, index, manifest.states, policy=policy, stream=stream)
    for split in ("Train", "Validation"):
        if len(data[split]) == 0:
            raise ConfigError(
                f"{store.path}: no {split} clips with both a label and complete embeddings; "
                f"fix: run `python -m embed run --dataset {dataset} --backbone {store.config['backbone']}`"
                f" (or `embed import`) until its {split} clips are complete"
            )
    if memo is not None:
        memo[key] = (data, report)
    return data, report


def command_line() -> str:
    prog = Path(sys.argv[0]).name
    head = ["python", "-m", "sequence"] if prog in ("__main__.py", "sequence") else [prog]
    return shlex.join([*head, *sys.argv[1:]])


def _frame_rate(store: Input, clip_ids: list[str], sample: int = 200) -> float | None:
    """Frames per second the cache holds (median over up to `sample` training clips): live
    prediction feeds the model frames at this rate."""
    rates = []
    for cid in clip_ids[:sample]:
        a = store.attrs_of(cid) or {}
        if a.get("frames") and a.get("duration"):
            rates.append(a["frames"] / a["duration"])
    return float(np.median(rates)) if rates else None


def _input(manifest: Manifest, cfg: TrainConfig) -> tuple[str, TrainConfig, Input, FramePolicy]:
    """A configuration's dataset, the configuration with deltas decided by the head when not set
    (TrainConfig.deltas), the store it reads and its frame policy."""
    dataset, _ = manifest.dataset(cfg.dataset)
    if cfg.deltas is None:
        cfg = cfg.model_copy(update={"deltas": head_class(cfg.head).sees_order})
    store = open_input(manifest.cache_path, dataset, cfg.backbone, weights=cfg.weights, key=cfg.key)
    return dataset, cfg, store, FramePolicy.from_config(cfg.model_dump())


def load_for(
    manifest: Manifest, cfg: TrainConfig, memo: DataMemo | None = None
) -> tuple[dict[str, SequenceSet], LoadReport]:
    """The splits a configuration trains on, as train_run loads them (shared through `memo`)."""
    dataset, cfg, store, policy = _input(manifest, cfg)
    return _load(manifest, dataset, store, policy=policy, memo=memo, stream=cfg.stream)


@dataclass(frozen=True)
class RunPlan:
    """How a run departs from an ordinary one: `fold` re-cuts Train and Validation (cross-validation,
    or the final model on both); `test` False leaves the Test split unscored (a tuner's trials select
    on Validation alone; the best is tested once); `on_epoch` sees each epoch and returns True to stop
    (pruning); `note` is recorded in data.json (the trial, the fold)."""

    fold: Fold | None = None
    test: bool = True
    on_epoch: Callable[[EpochLog], bool] | None = None
    note: dict = field(default_factory=dict)


def train_run(
    manifest: Manifest,
    cfg: TrainConfig,
    progress: bool = True,
    memo: DataMemo | None = None,
    command: str | None = None,
    plan: RunPlan | None = None,
) -> dict:
    """Train one configuration and write its run folder. Returns {"run", "validation", "test",
    "best_epoch", "stopped"} (stopped: ended by plan.on_epoch)."""
    plan = plan or RunPlan()
    dataset, cfg, store, policy = _input(manifest, cfg)
    device = resolve_device(cfg.device)
    head_params = resolve_params(cfg.head, cfg.head_params)
    input_dim = policy.input_dim(store.dim)
    build_head(
        cfg.head, input_dim, manifest.states, levels=manifest.levels, params=head_params
    )  # bad params fail before loading
    data, report = _load(manifest, dataset, store, policy=policy, memo=memo, stream=cfg.stream)
    if plan.fold is not None:
        data = plan.fold.apply(data)
    train = train_subset(data["Train"], cfg.train_clips, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_head(cfg.head, input_dim, manifest.states, levels=manifest.levels, params=head_params)
    resolved = {
        **cfg.model_dump(),
        "dataset": dataset,
        "head_params": head_params,
        "states": manifest.states,
        "levels": manifest.levels,
        "manifest": str(manifest.path),
        "clip_seconds": float(np.median(train.durations)),
        "frame_rate": _frame_rate(store, train.clip_ids),
        "parameters": sum(p.numel() for p in model.parameters()),
    }

    run_dir = create_run_dir(manifest.runs_path, dataset, store.config["backbone"], head=cfg.head)
    write_yaml(run_dir / "config.yaml", resolved)
    write_json(
        run_dir / "store.json",
        {
            "path": str(store.path),
            "key": store.key,
            "config": store.config,
            **({"parts": store.describe()} if isinstance(store, FusedStore) else {}),
        },
    )
    fused = {"not_in_every_store": store.not_in_every} if isinstance(store, FusedStore) else {}
    write_json(
        run_dir / "data.json",
        {
            **report.as_dict(),
            "clips": {s: len(d) for s, d in data.items()},
            "train_clips_used": len(train),
            **fused,
            **({"fold": plan.fold.describe()} if plan.fold else {}),
            **plan.note,
        },
    )
    (run_dir / "command.txt").write_text((command or command_line()) + "\n")
    log.info(
        "run %s: %s on %d train clips (%d params); input %s, weights %s",
        run_dir.name,
        cfg.head,
        len(train),
        resolved["parameters"],
        store.config["backbone"],
        store.config.get("weights") or "-",
    )

    stopped: list[int] = []

    def on_epoch(entry: EpochLog) -> bool:
        stop = plan.on_epoch is not None and plan.on_epoch(entry)
        stopped.extend([entry.epoch] if stop else [])
        return stop

    best_state, history, best_epoch = fit(
        model,
        train,
        data["Validation"],
        cfg=cfg,
        levels=manifest.levels,
        device=device,
        progress=progress,
        on_epoch=on_epoch,
    )
    model.load_state_dict(best_state)
    save_model(run_dir / "model.pt", model, head_params, input_dim=input_dim, levels=manifest.levels)
    hist = [vars(h) for h in history]
    write_json(run_dir / "history.json", hist)
    plots.curves_png(run_dir / "curves.png", hist, best_epoch)
    scored = {**data, "Test": data["Test"] if plan.test else data["Test"].subset([])}
    metrics = _evaluate(
        model,
        scored,
        train,
        manifest=manifest,
        batch=cfg.batch,
        device=device,
        run_dir=run_dir,
        subject_of=report.subject_of,
    )
    metrics.update({"best_epoch": best_epoch, "epochs_trained": len(history), "train_clips": len(train)})
    if stopped:
        metrics["stopped_at"] = stopped[0]
    _confusion_plots(run_dir, metrics, cfg)
    write_json(run_dir / "metrics.json", metrics)  # last: its presence marks the run finished
    final = finish_run(run_dir)
    return {
        "run": str(final),
        "validation": metrics["validation"],
        "test": metrics["test"],
        "best_epoch": best_epoch,
        "stopped": bool(stopped),
    }


@dataclass(frozen=True)
class TrainOptions:
    """What `sequence train` is told: a YAML of settings (as a grid's base) overridden by `settings`
    and by `params` (head parameters KEY=VALUE); `seeds` ("0,1,2") trains once per seed instead of
    once; `cv` K cross-validates by subject over Train and Validation (sequence.cross_validation)."""

    manifest: Path = Path("data_manifest.yaml")
    config: Path | None = None
    settings: TrainSettings = field(default_factory=TrainSettings)
    params: list[str] = field(default_factory=list)
    seeds: str | None = None
    cv: int | None = None
    progress: bool = True


def train(options: TrainOptions) -> dict:
    """One run ({"run", "validation", "test"}), with seeds one per seed ({"runs", "results",
    "aggregate"}), with cv the folds and the final model ({"folds", "summary", "final", ...});
    `states`: the manifest's, in order."""
    manifest = load_manifest(options.manifest)
    cfg = config_from_options(options.config, asdict(options.settings), options.params)
    if options.cv is not None:
        if options.seeds is not None:
            raise ConfigError("--cv and --seeds: give one; fix: --cv K folds by subject with the one --seed")
        from sequence.cross_validation import cross_validate

        return {**cross_validate(manifest, cfg, options.cv, progress=options.progress), "states": manifest.states}
    if options.seeds is not None:
        seeds = parse_seeds(options.seeds, options.settings.seed)
        return {**train_seeds(manifest, cfg, seeds, progress=options.progress), "states": manifest.states}
    return {**train_run(manifest, cfg, progress=options.progress), "states": manifest.states}


def train_seeds(manifest: Manifest, cfg: TrainConfig, seeds: list[int], progress: bool = True) -> dict:
    """The same configuration once per seed (data loaded once): {"runs", "aggregate"}."""
    memo: DataMemo = {}
    results = [train_run(manifest, cfg.model_copy(update={"seed": s}), progress, memo=memo) for s in seeds]
    return {"runs": [r["run"] for r in results], "results": results, "aggregate": aggregate([r["test"] for r in results])}


def aggregate(tests: list[dict]) -> dict:
    """{"test": {state: {metric: {"mean", "sd"}}}} over runs (sample sd; 0 for one run)."""
    out: dict[str, dict] = {}
    for state in tests[0]:
        out[state] = {}
        for metric in INTERVAL_METRICS:
            out[state][metric] = mean_sd([t[state][metric] for t in tests], 4)
    return {"test": out, "runs": len(tests)}


def _evaluate(
    model,
    data: dict[str, SequenceSet],
    train: SequenceSet,
    manifest: Manifest,
    batch: int,
    device: torch.device,
    run_dir: Path,
    subject_of: dict[str, str | None],
) -> dict:
    """Validation and test metrics, each test figure with its bootstrap interval (sequence.uncertainty);
    every clip's probabilities go to predictions.csv beside them."""
    majority = majority_levels(train.y.numpy(), manifest.states, manifest.levels)
    out, rows = {}, []
    for split, key in (("Validation", "validation"), ("Test", "test")):
        d = data[split]
        if len(d) == 0:
            out[key] = {}
            continue
        probs = predict_probs(model, d, batch, device=device)
        y = d.y.numpy()
        out[key] = evaluate(y, probs, manifest.states, levels=manifest.levels, majority=majority)
        if key == "test":
            groups = [subject_of.get(c) for c in d.clip_ids]
            for i, s in enumerate(manifest.states):
                out[key][s]["ci"] = intervals(y[:, i], probs[s].argmax(1), manifest.levels, groups=groups)
                out[key][s]["ci_by"] = unit(groups, len(d))
        rows += _prediction_rows(split, d, probs, states=manifest.states, subject_of=subject_of)
    write_csv(run_dir / "predictions.csv", rows)
    return out


def _prediction_rows(
    split: str, d: SequenceSet, probs: dict[str, np.ndarray], states: list[str], subject_of: dict[str, str | None]
) -> list[dict]:
    y = d.y.numpy()
    rows = []
    for i, clip in enumerate(d.clip_ids):
        row: dict = {"split": split, "clip": clip, "subject": subject_of.get(clip) or ""}
        for k, s in enumerate(states):
            row[f"{s}_true"] = int(y[i, k])
            row[f"{s}_pred"] = int(probs[s][i].argmax())
            row.update({f"{s}_p{j}": f"{v:.6f}" for j, v in enumerate(probs[s][i])})
        rows.append(row)
    return rows


def _confusion_plots(run_dir: Path, metrics: dict, cfg: TrainConfig) -> None:
    for state, m in metrics["test"].items():
        plots.confusion_png(
            run_dir / f"confusion_{state}.png",
            state,
            m["confusion"],
            title=f"test acc {m['accuracy']:.2f} (majority {m['majority_accuracy']:.2f}), "
            f"macro-F1 {m['macro_f1']:.2f}  [{cfg.head}]",
        )


@dataclass(frozen=True)
class EvaluateOptions:
    """What `sequence evaluate` is told: the run folder, and whether to write per-subject figures."""

    run: Path
    manifest: Path = Path("data_manifest.yaml")
    device: str | None = None
    by_subject: bool = False


def evaluate_run(options: EvaluateOptions) -> dict:
    """Re-evaluate a finished run from its folder and the cache; rewrites metrics.json (and, with
    by_subject, writes per-subject figures)."""
    run_dir, manifest, by_subject = options.run, load_manifest(options.manifest), options.by_subject
    device = options.device or "auto"
    run = Run.open(run_dir)
    cfg = TrainConfig.model_validate({k: v for k, v in run.config.items() if k in TrainConfig.model_fields})
    store = reopen_input(manifest.cache_path, run.config["dataset"], run.store)
    dev = resolve_device(device)
    data, report = _load(manifest, run.config["dataset"], store, policy=FramePolicy.from_config(cfg.model_dump()), memo=None)
    train = train_subset(data["Train"], cfg.train_clips, cfg.seed)
    metrics = {
        **run.metrics,
        **_evaluate(
            run.model(dev),
            data,
            train,
            manifest=manifest,
            batch=cfg.batch,
            device=dev,
            run_dir=run.path,
            subject_of=report.subject_of,
        ),
    }
    write_json(Path(run_dir) / "metrics.json", metrics)
    out = {"run": str(run_dir), "validation": metrics["validation"], "test": metrics["test"], "states": manifest.states}
    if by_subject:
        out.update(write_by_subject(Path(run_dir), manifest.states, manifest.levels))
    return out


def write_by_subject(run_dir: Path, states: list[str], levels: int) -> dict:
    """by_subject.csv and by_subject.png in the run folder, from its test predictions."""
    import csv

    with open(run_dir / "predictions.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "Test"]
    if not rows or not all(r.get("subject") for r in rows):
        raise ConfigError(
            f"{run_dir}: the test clips' subjects are not known; fix: the DAiSEE layout knows them "
            f"from the folders; a csv layout needs a `subject` column in its label file"
        )
    table = by_subject(rows, states, levels)
    write_csv(run_dir / "by_subject.csv", table)
    plots.by_subject_png(run_dir / "by_subject.png", table, states, title=f"{run_dir.name}: test accuracy per subject")
    return {
        "by_subject_csv": str(run_dir / "by_subject.csv"),
        "by_subject_png": str(run_dir / "by_subject.png"),
        "subjects": len(table),
    }
