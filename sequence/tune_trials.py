"""One tuning trial where it runs (this process or a dask worker): an ordinary run folder (or one per
fold) trained with the trial's settings, each epoch's validation macro-F1 reported to the study so
that the median pruner can stop a poor trial early. The coordinator (sequence.tuning) samples the
settings and records the outcome; a trial only reports and asks whether to stop."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from embed.errors import ConfigError
from embed.manifest import Manifest
from sequence.config import TrainConfig
from sequence.folds import Fold
from sequence.train import EpochLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialJob:
    """A sampled trial: where its study is stored, its id and number there, its settings, the folds
    when cross-validating (else Train/Validation as they are) and its command line."""

    storage: str
    study: str
    trial_id: int
    number: int
    cfg: TrainConfig
    folds: tuple[Fold, ...] | None
    command: str


def open_storage(url: str):
    """Optuna's RDB storage at a URL; SQLite waits for a lock instead of failing at once, since
    several worker processes write intermediate values to one file."""
    import optuna

    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def pruner():
    """The study's pruner, the same wherever a trial asks it: the median rule, after four trials have
    finished and from a trial's fourth epoch (or fold) on."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=3)


def run_trial(manifest: Manifest, job: TrialJob, threads: int | None = None) -> dict:
    """Train the trial; report each epoch (or, cross-validating, each fold's running mean) and stop
    when the pruner says so. {"number", "value", "pruned", "runs"} or {"number", "error"}."""
    import optuna

    if threads:
        import torch

        torch.set_num_threads(threads)
    from sequence.cross_validation import mean_f1, run_folds
    from sequence.experiment import RunPlan, train_run

    study = optuna.load_study(study_name=job.study, storage=open_storage(job.storage), pruner=pruner())
    trial = optuna.trial.Trial(study, job.trial_id)
    note = {"trial": job.number, "study": job.study}

    def report(value: float, step: int) -> bool:
        trial.report(value, step)
        return trial.should_prune()

    try:
        if job.folds:
            results = run_folds(
                manifest,
                job.cfg,
                list(job.folds),
                progress=False,
                note=note,
                on_fold=lambda number, mean: report(mean, number),
                command=job.command,
            )
            pruned = len(results) < len(job.folds)
        else:

            def on_epoch(entry: EpochLog) -> bool:
                return report(entry.val_macro_f1, entry.epoch)

            plan = RunPlan(test=False, on_epoch=on_epoch, note=note)
            results = [train_run(manifest, job.cfg, progress=False, command=job.command, plan=plan)]
            pruned = results[0]["stopped"]
    except ConfigError as e:
        return {"number": job.number, "error": str(e)}
    value, best_epochs = mean_f1(results), [r["best_epoch"] for r in results]
    runs = [r["run"] for r in results]
    trial.set_user_attr("runs", runs)
    trial.set_user_attr("best_epochs", best_epochs)
    return {"number": job.number, "value": value, "pruned": pruned, "runs": runs}
