"""Run folders and the comparison table across runs.

A run is written into `<runs_dir>/<dataset>/<name>.partial/` and renamed to `<name>/` only after its
last file (metrics.json) is in place, so a killed run never leaves a folder that looks finished.
A finished folder holds everything needed to re-evaluate it or predict with it (plus the cache):
config.yaml (resolved settings), store.json (the cache store and its extraction config), data.json
(what was loaded and what was missing), history.json, model.pt, metrics.json, plots, command.txt.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from embed.errors import ConfigError

PARTIAL = ".partial"
TUNING_PREFIX = "tune-"  # <runs>/<dataset>/tune-<study>/: a study's outputs (sequence.tuning), not a run


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows of equal keys as a CSV with a header (an empty file for no rows)."""
    with open(path, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def write_yaml(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(obj, sort_keys=False))
    os.replace(tmp, path)


def create_run_dir(runs_path: Path, dataset: str, backbone: str, head: str) -> Path:
    """A new run's folder, named so that names sort as the runs were started (to the millisecond:
    runs of a grid or a notebook start well within a second of each other)."""
    now = time.time()
    stamp = f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{int(now * 1000) % 1000:03d}"
    name = f"{stamp}-{backbone}-{head}-{secrets.token_hex(2)}"
    path = Path(runs_path) / dataset / (name + PARTIAL)
    path.mkdir(parents=True)
    return path


def finish_run(partial: Path) -> Path:
    final = partial.with_name(partial.name.removesuffix(PARTIAL))
    os.replace(partial, final)
    return final


def save_model(path: Path, model, head_params: dict, input_dim: int, levels: int) -> None:
    import torch  # here, not at the top: `sequence runs` lists folders and should start fast

    torch.save(
        {
            "head": model.name,
            "head_params": head_params,
            "input_dim": input_dim,
            "states": model.states,
            "levels": levels,
            "state_dict": model.state_dict(),
        },
        path,
    )


def load_model(run_dir: Path, device):
    import torch

    from sequence.heads import build_head

    ckpt = torch.load(Path(run_dir) / "model.pt", map_location="cpu", weights_only=True)
    model = build_head(ckpt["head"], ckpt["input_dim"], ckpt["states"], levels=ckpt["levels"], params=ckpt["head_params"])
    state = ckpt["state_dict"]
    model.input_mean, model.input_std = state["input_mean"], state["input_std"]  # sized by training
    model.load_state_dict(state)
    return model.to(device).eval()


def load_run(run_dir: Path) -> dict:
    """config, store, metrics (and data) of a finished run folder."""
    run_dir = Path(run_dir)
    if run_dir.name.endswith(PARTIAL) or not (run_dir / "metrics.json").is_file():
        raise ConfigError(
            f"{run_dir}: not a finished run (no metrics.json; a killed or running training?); "
            f"fix: pass a run folder listed by `python -m sequence runs`"
        )
    out = {"path": run_dir, "config": yaml.safe_load((run_dir / "config.yaml").read_text())}
    for name in ("store", "metrics", "data"):
        out[name] = json.loads((run_dir / f"{name}.json").read_text())
    return out


def list_runs(runs_path: Path, dataset: str = "*") -> tuple[list[dict], list[Path]]:
    """Finished runs (oldest first) and unfinished folders."""
    runs, partial = [], []
    for path in sorted(Path(runs_path).glob(f"{dataset}/*")):
        if not path.is_dir() or path.name.startswith(TUNING_PREFIX):
            continue
        try:
            runs.append(load_run(path))
        except (ConfigError, OSError, ValueError):
            partial.append(path)
    runs.sort(key=lambda r: r["path"].name)
    return runs, partial


def runs_table(manifest: Path, dataset: str | None = None) -> dict:
    """`sequence runs`: every finished run's comparison row (under one dataset, or all), how many,
    where, and the unfinished folders (killed or still running), which are not listed."""
    from embed.manifest import load_manifest

    m = load_manifest(manifest)
    found, partial = list_runs(m.runs_path, dataset or "*")
    rows = comparison_rows(found, m.states)
    return {
        "rows": rows,
        "runs": len(found),
        "runs_path": str(m.runs_path),
        "partial": [str(p) for p in partial],
        "states": m.states,
    }


SEED_FREE = ("seed",)  # config keys that may differ between runs of one seed group


def seed_groups(runs: list[dict]) -> list[list[dict]]:
    """Runs that differ only by seed (same settings, same store), in order of their first run; a
    group's runs in order of their seed (their folders' names sort by when each began, and seeds
    trained at once may begin in any order)."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        key = json.dumps(
            [{k: v for k, v in r["config"].items() if k not in SEED_FREE}, r["store"].get("key")],
            sort_keys=True,
            default=str,
        )
        groups.setdefault(key, []).append(r)
    by_seed = lambda r: (r["config"].get("seed") is None, r["config"].get("seed") or 0)  # noqa: E731
    return [sorted(group, key=by_seed) for group in groups.values()]


ROW_METRICS = {
    "acc": "accuracy",
    "F1": "macro_f1",
    "bal": "balanced_accuracy",
    "QWK": "qwk",
    "MCC": "mcc",
    "maj": "majority_accuracy",
}


def mean_sd(values: list[float], digits: int = 3) -> dict:
    """{"mean", "sd"} over runs (sample sd; 0 for one run)."""
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": round(float(np.mean(values)), digits), "sd": round(sd, digits)}


def _mean_sd(values: list[float]) -> float | dict:
    """One run: the figure; several: {"mean", "sd"}, shown as 'mean ± sd' in tables."""
    return round(values[0], 3) if len(values) == 1 else mean_sd(values)


def cell(value: Any, digits: int = 3) -> str:
    """A table cell: a mean ± sd pair, a number, or text."""
    if isinstance(value, dict):
        return f"{value['mean']:.{digits}f} ± {value['sd']:.{digits}f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def comparison_rows(runs: list[dict], states: list[str]) -> list[dict]:
    """One row per run, or per group of runs that differ only by seed (figures as mean ± sd): the
    columns of the table a researcher keeps by hand."""
    rows = []
    for group in seed_groups(runs):
        r = group[0]
        c, m, s = r["config"], r["metrics"], r["store"]
        name = r["path"].name + (f" (+{len(group) - 1} runs)" if len(group) > 1 else "")
        row = {
            "run": name,
            "seeds": ",".join(str(g["config"].get("seed")) for g in group),
            "dataset": c["dataset"],
            "backbone": c["backbone"],
            "weights": s["config"].get("weights", ""),
            "train clips": m["train_clips"],
            "frames": c["frames"] or "all",
            "deltas": "yes" if c.get("deltas") else "no",
            "dim": s["config"].get("dim"),
            "batch": c["batch"],
            "epochs": f"{m['best_epoch']}/{m['epochs_trained']}/{c['epochs']}",
            "head": describe(c["head"], c["head_params"]),
            "loss": c["loss"],
        }
        for state in states:
            short = state[0]
            for label, key in ROW_METRICS.items():
                values = [g["metrics"]["test"][state][key] for g in group if key in g["metrics"]["test"].get(state, {})]
                row[f"{short} {label}"] = _mean_sd(values) if values else ""
        rows.append(row)
    return rows


def to_markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows({k: cell(v) if isinstance(v, dict) else v for k, v in r.items()} for r in rows)
    return buf.getvalue()


def describe(name: str, params: dict) -> str:
    """Short human label for tables: lstm 256/256 fc 128 drop 0.5."""
    parts = [name]
    for k, v in params.items():
        if isinstance(v, bool) or v in ([], ()):
            parts += [k] if v is True else []  # flags by name when on; empty lists say nothing
            continue
        if isinstance(v, list | tuple):
            v = "/".join(str(x) for x in v)
        parts.append(f"{k} {v}")
    return " ".join(parts)
