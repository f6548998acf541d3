"""Published figures as reference data (sequence/reference/<name>.yaml, each citing its source), and
a grid's results set beside them: per experiment and state, our accuracy with its 95 % interval
against the published one, whether the published value lies inside it, and the per-level F1 of both."""

from __future__ import annotations

from pathlib import Path

import yaml

from embed.errors import ConfigError
from sequence.runs import load_run, write_csv, write_json

REFERENCE_DIR = Path(__file__).with_name("reference")


def reference_names() -> list[str]:
    return sorted(p.stem for p in REFERENCE_DIR.glob("*.yaml"))


def load_reference(name: str) -> dict:
    path = REFERENCE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"--reference {name!r}: no such reference; fix: one of {', '.join(reference_names())}")
    return yaml.safe_load(path.read_text())


def reference_rows(results: list[dict], reference: dict, dataset: str) -> list[dict]:
    """One row per experiment of the grid the reference publishes and per state. `results` are the
    grid's (train_run's dicts with their `experiment` number); figures in % as the reference gives
    them. `comparable` is False when the dataset is not the reference's: the comparison means nothing."""
    rows = []
    for r in results:
        published = reference["results"].get(r["experiment"])
        if published is None:
            continue
        for s in reference["states"]:
            ours, (accuracy, f1) = r["test"][s], published[s]
            low, high = (100 * v for v in ours["ci"]["accuracy"])
            rows.append(
                {
                    "experiment": r["experiment"],
                    "state": s,
                    "accuracy": round(100 * ours["accuracy"], 2),
                    "ci_low": round(low, 2),
                    "ci_high": round(high, 2),
                    "published_accuracy": accuracy,
                    "inside": bool(low <= accuracy <= high),
                    "per_level_f1": [round(v, 2) for v in ours["per_level_f1"]],
                    "published_per_level_f1": f1,
                    "comparable": dataset == reference["dataset"],
                    "run": r["run"],
                }
            )
    return rows


def markdown(rows: list[dict], reference: dict) -> str:
    """The side-by-side table as Markdown, with a note when the dataset is not the reference's."""
    head = "| exp | state | ours acc % [95 % CI] | published % | inside | ours F1 per level | published F1 |\n"
    head += "|---|---|---|---|---|---|---|\n"

    def levels(f1: list | None) -> str:
        return "NA" if f1 is None else " ".join(f"{v:.2f}" for v in f1)

    body = "".join(
        f"| {r['experiment']} | {r['state']} | {r['accuracy']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] | "
        f"{r['published_accuracy']:.2f} | {'yes' if r['inside'] else 'no'} | {levels(r['per_level_f1'])} | "
        f"{levels(r['published_per_level_f1'])} |\n"
        for r in rows
    )
    note = "" if all(r["comparable"] for r in rows) else f"\n**Not {reference['dataset']}: the comparison means nothing.**\n"
    return head + body + note + f"\nSource: {reference['source']}\n"


def write_reference(results: list[dict], reference: dict, runs_path: Path, grid_name: str) -> tuple[list[dict], dict]:
    """reference_rows of a grid's results, written as reference.{csv,json,png} in the dataset's runs
    folder; the rows and the paths."""
    from sequence import plots

    dataset = load_run(Path(results[0]["run"]))["config"]["dataset"]
    rows = reference_rows(results, reference, dataset)
    out = Path(runs_path) / dataset
    paths = {"csv": out / "reference.csv", "json": out / "reference.json", "png": out / "reference.png"}
    write_csv(paths["csv"], [{**r, "per_level_f1": " ".join(map(str, r["per_level_f1"]))} for r in rows])
    write_json(paths["json"], rows)
    warning = "" if all(r["comparable"] for r in rows) else f" (NOT {reference['dataset']}: means nothing)"
    plots.reference_png(paths["png"], rows, reference["states"], title=f"{grid_name} against the published figures{warning}")
    return rows, paths
