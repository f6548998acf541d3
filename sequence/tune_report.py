"""What a tuning leaves besides its run folders: the best trial tested once on the Test split, the
best settings as grid files `sequence experiments` runs (once, and once per seed), every trial in
trials.csv, and PNGs of the optimisation history and the parameters' importances."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import yaml

from embed.manifest import Manifest
from embed.pyplot import pyplot
from sequence.config import parse_config
from sequence.folds import Fold
from sequence.runs import write_csv

log = logging.getLogger(__name__)
SEEDS = [0, 1, 2, 3, 4]


def test_best(manifest: Manifest, study, folds: tuple[Fold, ...] | None, progress: bool = True) -> dict:
    """The best trial's Test figures, computed once per best trial (recorded in the study): its run
    re-evaluated on Test, or with folds the final model trained on Train and Validation and tested.
    {"trial", "run", "test", "new"} (new: computed by this call)."""
    best = study.best_trial
    tested = dict(study.user_attrs.get("tested") or {})
    if str(best.number) in tested:
        from sequence.run import Run

        run = tested[str(best.number)]
        return {"trial": best.number, "run": run, "test": Run.open(run).metrics["test"], "new": False}
    cfg = parse_config(best.user_attrs["config"], f"study '{study.study_name}': trial {best.number}")
    if folds:
        from sequence.cross_validation import final_epochs, train_final

        epochs = final_epochs(best.user_attrs["best_epochs"])
        note = {"trial": best.number, "study": study.study_name}
        result = train_final(manifest, cfg, list(folds), epochs=epochs, progress=progress, note=note)
        run, test = result["run"], result["test"]
    else:
        from sequence.experiment import EvaluateOptions, evaluate_run

        run = best.user_attrs["runs"][0]
        test = evaluate_run(EvaluateOptions(Path(run), manifest.path))["test"]
    tested[str(best.number)] = run
    study.set_user_attr("tested", tested)
    log.info("trial %d, the best, tested once: %s", best.number, run)
    return {"trial": best.number, "run": run, "test": test, "new": True}


def trial_rows(study) -> list[dict]:
    """Every trial of the study: its number, state, validation macro-F1, seconds, settings and runs."""
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    rows = []
    for t in trials:
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        )
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "value": "" if t.value is None else round(t.value, 4),
                "seconds": "" if seconds is None else round(seconds, 1),
                **{n: t.params.get(n, "") for n in names},
                "runs": ";".join(t.user_attrs.get("runs", [])),
            }
        )
    return rows


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_grids(study, out_dir: Path) -> dict:
    """best.yaml (the best settings, one run) and best_seeds.yaml (once per seed)."""
    best = study.best_trial
    cfg = {k: v for k, v in best.user_attrs["config"].items() if k != "device"}
    header = f"# Best trial {best.number} of study '{study.study_name}': validation macro-F1 {best.value:.4f}.\n"
    _write_text(out_dir / "best.yaml", header + yaml.safe_dump({"base": cfg}, sort_keys=False))
    seeds = {"base": {k: v for k, v in cfg.items() if k != "seed"}, "seeds": SEEDS}
    _write_text(
        out_dir / "best_seeds.yaml",
        header + "# Once per seed: figures as mean ± sd.\n" + yaml.safe_dump(seeds, sort_keys=False),
    )
    return {"best_grid": str(out_dir / "best.yaml"), "seeds_grid": str(out_dir / "best_seeds.yaml")}


def write_plots(study, out_dir: Path) -> dict:
    """history.png and, once two trials have completed with different settings, importance.png
    (Optuna's matplotlib figures)."""
    plt = pyplot()
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib figures experimental
        for name, draw in (("history", plot_optimization_history), ("importance", plot_param_importances)):
            try:
                ax = draw(study)
            except (ValueError, RuntimeError) as e:
                log.info("%s.png not drawn: %s", name, str(e).splitlines()[0])
                continue
            ax.figure.savefig(out_dir / f"{name}.png", dpi=110, bbox_inches="tight")
            plt.close(ax.figure)
            out[f"{name}_png"] = str(out_dir / f"{name}.png")
    return out


def write_outputs(study, out_dir: Path, top: int = 10) -> tuple[dict, list[dict]]:
    """The files of out_dir (their paths) and the top trials by validation macro-F1."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    write_csv(out_dir / "trials.csv", rows)
    outputs = {"trials_csv": str(out_dir / "trials.csv"), **write_grids(study, out_dir), **write_plots(study, out_dir)}
    done = [r for r in rows if r["state"] == "complete"]
    return outputs, sorted(done, key=lambda r: -r["value"])[:top]
