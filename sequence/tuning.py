"""`sequence tune`: a search over a space of settings (sequence.tune_space) with Optuna: TPE sampling
(seeded), trials pruned on validation macro-F1 by the median rule as epochs go, each trial an
ordinary run folder. The study lives in Optuna's RDB storage (a SQLite file in the dataset's runs
folder by default, or any database URL), so a tuning stopped or killed resumes with the next call,
which adds its trials. Trials run here one after another, or on dask workers (`--workers`,
`--scheduler`) that share the storage.

Selection sees Validation only (or, with cv, the folds of Train and Validation); the Test split is
scored once, for the best trial, after the search.

One coordinator per study at a time (a lock that dies with its process): a trial found running when
the coordinator starts was cut off with its coordinator, so it is marked failed and its settings
are queued again, first in line: no trial is lost or counted twice."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from embed.cluster import ClusterChoice
from embed.errors import ConfigError
from embed.locking import exclusive
from embed.manifest import Manifest, load_manifest
from sequence.config import parse_config
from sequence.experiment import command_line
from sequence.folds import Fold
from sequence.runs import TUNING_PREFIX
from sequence.tune_space import Space, load_space
from sequence.tune_trials import TrialJob, open_storage, pruner, run_trial

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneOptions:
    """What `sequence tune` is told: the space file, how many trials this call adds and for how long
    at most (seconds; None: no limit), where trials run, the study's storage URL (None: SQLite in the
    runs folder) and name (None: the space file's name), cross-validation folds (None: Train and
    Validation as they are) and the sampler's seed."""

    space: Path
    manifest: Path = Path("data_manifest.yaml")
    dataset: str | None = None
    trials: int = 20
    timeout: float | None = None
    cluster: ClusterChoice = field(default_factory=ClusterChoice)
    storage: str | None = None
    study: str | None = None
    cv: int | None = None
    seed: int = 0
    top: int = 10
    progress: bool = True


@dataclass
class _Search:
    """What the coordinator holds while trials run."""

    study: object
    space: Space
    url: str
    name: str
    folds: tuple[Fold, ...] | None
    said: set = field(default_factory=set)
    outcomes: list[dict] = field(default_factory=list)

    def ask(self) -> tuple[object, TrialJob]:
        trial = self.study.ask()
        cfg = self.space.sample(trial, self.said)
        trial.set_user_attr("config", cfg.model_dump(mode="json"))
        # Trial ids are what a worker needs to report to this trial (optuna.trial.Trial(study, id)).
        job = TrialJob(
            self.url, self.name, trial._trial_id, number=trial.number, cfg=cfg, folds=self.folds, command=command_line()
        )
        log.info("trial %d started: %s", trial.number, {k: v for k, v in trial.params.items()})
        return trial, job

    def tell(self, trial, outcome: dict) -> None:
        from optuna.trial import TrialState

        if "error" in outcome:
            self.study.tell(trial, state=TrialState.FAIL)
            log.error("trial %d failed: %s", outcome["number"], outcome["error"])
        elif outcome["pruned"]:
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, outcome["value"])
        self.outcomes.append(outcome)
        if "error" not in outcome:
            log.info(
                "trial %d %s: validation macro-F1 %.3f (best so far %.3f)",
                outcome["number"],
                "pruned" if outcome["pruned"] else "finished",
                outcome["value"],
                self.study.best_value if _completed(self.study) else float("nan"),
            )


def _completed(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def open_study(url: str, name: str, *, seed: int, cv: int | None):
    """The study (created, or loaded to add trials), its sampler seeded by `seed` and the number of
    trials already made (a resumed study does not replay its first call's draws)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # this module logs each trial itself
    try:
        study = optuna.create_study(
            storage=open_storage(url),
            study_name=name,
            direction="maximize",
            pruner=pruner(),
            load_if_exists=True,
        )
    except Exception as e:  # SQLAlchemy's errors: a wrong URL, an unreachable server, a missing driver
        raise ConfigError(f"--storage {url}: cannot open the study ({str(e).splitlines()[0]}); fix: check the URL") from None
    known = study.user_attrs.get("cv", "unset")
    if known == "unset":
        study.set_user_attr("cv", cv)
    elif known != cv:
        raise ConfigError(
            f"study '{name}' was tuned with --cv {known}, not {cv}: their scores do not compare; "
            f"fix: give --cv {known}, or a new --study name"
        )
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), constant_liar=True)
    return study


def requeue_interrupted(study) -> list[int]:
    """Trials left running by a coordinator that died: marked failed, their settings queued again."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        log.warning("trial %d was cut off (its tuning was stopped): its settings run again", t.number)
    return [t.number for t in stale]


def _run_here(search: _Search, manifest: Manifest, options: TuneOptions, deadline: float) -> None:
    for _ in range(options.trials):
        if time.monotonic() > deadline:
            log.info("--timeout %s s reached: no more trials started", options.timeout)
            break
        trial, job = search.ask()
        search.tell(trial, run_trial(manifest, job))


def _run_on_cluster(search: _Search, manifest: Manifest, options: TuneOptions, deadline: float) -> dict:
    """Trials on dask workers, as many at once as there are workers, each sampled when a worker is free."""
    from dask.distributed import as_completed

    from embed.cluster import cluster_session

    with cluster_session(options.cluster) as dask:
        slots = max(1, len(dask.client.scheduler_info()["workers"]))
        pending: dict = {}
        started = 0

        def submit() -> None:
            nonlocal started
            trial, job = search.ask()
            fut = dask.client.submit(run_trial, manifest, job, threads=dask.threads, pure=False, retries=1)
            pending[fut.key] = trial
            queue.add(fut)
            started += 1

        queue = as_completed()
        while started < min(slots, options.trials) and time.monotonic() <= deadline:
            submit()
        for fut in queue:
            search.tell(pending.pop(fut.key), fut.result())
            if started < options.trials and time.monotonic() <= deadline:
                submit()
    return dask.info()


def tune(options: TuneOptions) -> dict:
    """Run this call's trials, then test the best once and write the outputs (sequence.tune_report).
    Returns {"study", "storage", "trials", "retried", "top", "best", "test", "outputs", "cluster", "states"}."""
    from sequence.tune_report import test_best, write_outputs

    manifest = load_manifest(options.manifest)
    space = load_space(options.space, options.dataset)
    dataset, _ = manifest.dataset(space.base.get("dataset"))
    name = options.study or Path(options.space).stem
    where = Path(manifest.runs_path) / dataset
    where.mkdir(parents=True, exist_ok=True)
    url = options.storage or f"sqlite:///{(where / 'optuna.db').resolve()}"
    out_dir = where / f"{TUNING_PREFIX}{name}"
    busy = f"study '{name}' is being tuned by another `sequence tune` ({{holder}}); fix: wait for it, or give it --workers"
    with exclusive(out_dir / "coordinator.lock", unwritable="make the runs folder writable", busy=busy):
        study = open_study(url, name, seed=options.seed, cv=options.cv)
        retried = requeue_interrupted(study)
        folds = None
        if options.cv:
            from sequence.cross_validation import make_folds

            # Folds depend on the clips, their subjects and labels: the base's data, whatever is sampled.
            folds = tuple(make_folds(manifest, parse_config(space.base, str(options.space)), options.cv)[0])
        search = _Search(study, space, url, name=name, folds=folds)
        deadline = time.monotonic() + (options.timeout or float("inf"))
        cluster = _run_on_cluster(search, manifest, options, deadline=deadline) if options.cluster else None
        if not options.cluster:
            _run_here(search, manifest, options, deadline=deadline)
        if not _completed(study):
            raise ConfigError(
                f"study '{name}': no trial has completed yet (all pruned or failed); fix: run more trials, "
                f"or widen the space"
            )
        test = test_best(manifest, study, folds, progress=options.progress)
        outputs, top = write_outputs(study, out_dir, top=options.top)
    return {
        "study": name,
        "storage": url,
        "trials": search.outcomes,
        "retried": retried,
        "top": top,
        "best": {
            "number": study.best_trial.number,
            "value": study.best_value,
            "config": study.best_trial.user_attrs["config"],
        },
        "test": test,
        "outputs": outputs,
        "cluster": cluster,
        "states": manifest.states,
    }
