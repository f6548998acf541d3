"""A tuning space file: `base` (settings for every trial, as a grid's base) and `space` (what each
trial samples). A space key is a setting (`head`, `lr`, `frames`, `loss`, ...) or a head parameter
`head_params.NAME`; its value is a list of choices or a range `{low, high}` (integers when both
ends are, `log: true` for a log scale, `step` for a grid of values). A head parameter that the
sampled head does not take is left out of that trial."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from embed.errors import ConfigError
from sequence.config import TrainConfig, parse_config
from sequence.heads import head_defaults, head_names

log = logging.getLogger(__name__)
SPACE_KEYS = {"base", "space"}
FIXED = ("dataset", "backbone", "weights", "key", "device", "seed", "stream")  # chosen, never tuned
PRIMITIVE = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Dimension:
    """One searched setting: `choices` (a list), or a range low..high (log scale, step)."""

    name: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def param(self) -> str | None:
        """The head parameter's name for a `head_params.NAME` key, else None."""
        return self.name.split(".", 1)[1] if self.name.startswith("head_params.") else None

    def suggest(self, trial) -> Any:
        """This dimension's value for an Optuna trial. Choices that Optuna cannot store (lists, such
        as a layer-size list) are offered as their JSON text and decoded back."""
        if self.choices is not None:
            if all(isinstance(c, PRIMITIVE) for c in self.choices):
                return trial.suggest_categorical(self.name, list(self.choices))
            return json.loads(trial.suggest_categorical(self.name, [json.dumps(c) for c in self.choices]))
        if isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float):
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=int(self.step or 1))
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log, step=self.step)


@dataclass(frozen=True)
class Space:
    path: Path
    base: dict
    dimensions: tuple[Dimension, ...]

    def heads(self) -> list[str]:
        """The heads trials can sample."""
        dim = next((d for d in self.dimensions if d.name == "head"), None)
        return list(dim.choices) if dim is not None else [self.base.get("head") or TrainConfig.model_fields["head"].default]

    def sample(self, trial, said: set | None = None) -> TrainConfig:
        """A trial's configuration: the base with each dimension sampled, the head first so that
        only its own parameters are sampled. `said` collects (head, parameter) pairs already logged
        as left out, so each is said once."""
        said = set() if said is None else said
        raw = {**self.base, "head_params": dict(self.base.get("head_params") or {})}
        for dim in sorted(self.dimensions, key=lambda d: d.name != "head"):
            if dim.param is None:
                raw[dim.name] = dim.suggest(trial)
                continue
            head = raw.get("head") or TrainConfig.model_fields["head"].default
            if dim.param not in head_defaults(head):
                if (head, dim.param) not in said:
                    said.add((head, dim.param))
                    log.info("head '%s' takes no '%s': left out of its trials", head, dim.param)
                continue
            raw["head_params"][dim.param] = dim.suggest(trial)
        head = raw.get("head") or TrainConfig.model_fields["head"].default
        taken = head_defaults(head)
        for name in [p for p in raw["head_params"] if p not in taken]:  # the base's, for another head
            if (head, name) not in said:
                said.add((head, name))
                log.info("head '%s' takes no '%s': left out of its trials", head, name)
            del raw["head_params"][name]
        return parse_config(raw, f"{self.path}: trial {trial.number}")


def _dimension(path: Path, name: str, value: Any) -> Dimension:
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{path}: space key '{name}' has no choices; fix: give a list of at least one value")
        return Dimension(name, choices=tuple(value))
    if isinstance(value, dict) and {"low", "high"} <= set(value) and set(value) <= {"low", "high", "log", "step"}:
        low, high = value["low"], value["high"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)) or low >= high:
            raise ConfigError(
                f"{path}: space key '{name}': low {low!r} must be a number below high {high!r}; "
                f"fix: e.g. {{low: 1.0e-4, high: 1.0e-2}} (YAML reads 1e-4 without a dot as text)"
            )
        if value.get("log") and low <= 0:
            raise ConfigError(f"{path}: space key '{name}': a log range needs low > 0; fix: raise low or drop log")
        return Dimension(name, low=low, high=high, log=bool(value.get("log")), step=value.get("step"))
    raise ConfigError(
        f"{path}: space key '{name}': {value!r} is neither a list of choices nor a range; "
        f"fix: e.g. [lstm, gru] or {{low: 1.0e-4, high: 1.0e-2, log: true}}"
    )


def load_space(path: Path, dataset: str | None = None) -> Space:
    """A space file, checked before any trial runs: unknown keys, settings that cannot be tuned, head
    parameters no sampled head takes, and a base that does not parse are one-line errors."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the space ({str(e).splitlines()[0]}); fix: correct the file") from None
    if not isinstance(raw, dict) or set(raw) - SPACE_KEYS or not raw.get("space"):
        extra = sorted(set(raw) - SPACE_KEYS) if isinstance(raw, dict) else ["(not a mapping)"]
        what = f"unknown key '{extra[0]}'" if extra else "no `space`"
        raise ConfigError(f"{path}: {what}; fix: a space file has `base` (settings) and `space` (what trials sample)")
    base = dict(raw.get("base") or {})
    if dataset:
        base["dataset"] = dataset
    parse_config(base, f"{path}: base")
    dims = []
    for name, value in raw["space"].items():
        if name in FIXED:
            raise ConfigError(f"{path}: '{name}' cannot be tuned; fix: set it in `base` (or on the command line)")
        if not name.startswith("head_params.") and name not in TrainConfig.model_fields:
            raise ConfigError(
                f"{path}: space key '{name}' is not a setting; fix: use one of {', '.join(TrainConfig.model_fields)} "
                f"or head_params.NAME"
            )
        dims.append(_dimension(path, name, value))
    space = Space(Path(path), base, tuple(dims))
    unknown_heads = [h for h in space.heads() if h not in head_names()]
    if unknown_heads:
        raise ConfigError(f"{path}: head '{unknown_heads[0]}' does not exist; fix: use one of {', '.join(head_names())}")
    for d in space.dimensions:
        if d.param is not None and not any(d.param in head_defaults(h) for h in space.heads()):
            raise ConfigError(
                f"{path}: no head of {space.heads()} takes '{d.param}'; fix: drop {d.name} or sample a head that takes it"
            )
    return space
