"""Settings: a training run's (validated, unknown keys are errors; the same for CLI, grids and runs),
the subset a command line gives, and the windows predict, live and serve score."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from embed.errors import ConfigError


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str | None = None  # None: the manifest's default dataset
    backbone: str = "inception"
    weights: str | None = None  # None: the only store of this backbone; else as on `embed run`
    key: str | None = None  # a store key (prefix), to pick among several stores
    head: str = "lstm"
    head_params: dict[str, Any] = Field(default_factory=dict)
    frames: int | None = Field(100, ge=0)  # per clip, uniform over its face frames; 0/None: all
    stride: int | None = Field(None, ge=1)
    # Append frame-to-frame differences to the embeddings (see data.FramePolicy). None: on for heads
    # that see frame order, off for those that pool it away (a mean of differences is mostly noise).
    deltas: bool | None = None
    train_clips: int | None = Field(None, ge=1)  # seeded random subset of Train; None: all
    loss: Literal["weighted_ce", "ce", "focal", "ordinal"] = "weighted_ce"
    focal_gamma: float = Field(2.0, ge=0)
    sampler: Literal["shuffle", "weighted"] = "shuffle"
    epochs: int = Field(60, ge=1)
    batch: int = Field(32, ge=1)
    # 3e-4 over 60 epochs: at 1e-3 the sample's results swung by a third across seeds (bench-free
    # check: 4 seeds, boredom +0.19..+0.31 against +0.28..+0.34 at 3e-4).
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    patience: int = Field(15, ge=1)  # epochs without a better validation score before stopping
    # Validation score for early stopping and the epoch kept; "last": the final epoch, no early stop.
    select: Literal["macro_f1", "accuracy", "loss", "last"] = "macro_f1"
    seed: int = 0
    device: str = "auto"
    # Read embeddings from the cache batch by batch instead of holding the splits in memory. None:
    # only when they would not fit (data.memory_budget). Results are the same either way.
    stream: bool | None = None
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)


def _describe(err: dict) -> str:
    loc = ".".join(str(x) for x in err["loc"]) or "(top)"
    if err["type"] == "extra_forbidden":
        known = ", ".join(TrainConfig.model_fields)
        return f"unknown key '{loc}'; fix: use one of {known}"
    return f"key '{loc}': {err['msg']}; fix: correct the value"


def parse_config(raw: dict, where: str) -> TrainConfig:
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{where}: {_describe(e.errors()[0])}") from None


def default(name: str) -> Any:
    """A setting's default, for help texts (one place holds it)."""
    return TrainConfig.model_fields[name].default


def parse_params(values: list[str]) -> dict:
    """--param hidden=512,1024 --param dropout=0.5 -> {"hidden": [512, 1024], "dropout": 0.5}."""
    out = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--param {item!r}: expected key=value; fix: e.g. --param hidden=256,256")
        if value == "" or "," in value:
            out[key] = [yaml.safe_load(v) for v in value.split(",") if v != ""]
        else:
            out[key] = yaml.safe_load(value)
    return out


def config_from_options(file: Path | None, options: dict, params: list[str] | None = None) -> TrainConfig:
    """A run's settings: a YAML file's (as a grid's base), overridden by the options given (None:
    not given) and by --param values merged into its head_params."""
    raw: dict = {}
    if file is not None:
        if not file.is_file():
            raise ConfigError(f"{file}: no such file; fix: pass an existing YAML file to --config")
        raw = yaml.safe_load(file.read_text()) or {}
    raw.update({k: v for k, v in options.items() if v is not None})
    if params:
        raw["head_params"] = {**raw.get("head_params", {}), **parse_params(params)}
    return parse_config(raw, str(file) if file else "options")


def parse_seeds(seeds: str, seed: int | None = None) -> list[int]:
    """--seeds 0,1,2 -> [0, 1, 2]: distinct integers, and not beside --seed."""
    if seed is not None:
        raise ConfigError("--seed and --seeds: give one; fix: --seeds 0,1,2 runs each of those seeds")
    try:
        out = [int(x) for x in seeds.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r}: not comma-separated integers; fix: e.g. --seeds 0,1,2") from None
    if len(set(out)) != len(out) or not out:
        raise ConfigError(f"--seeds {seeds!r}: give distinct seeds; fix: e.g. --seeds 0,1,2")
    return out


@dataclass(frozen=True)
class TrainSettings:
    """The settings a command line gives (TrainConfig's keys but head parameters; None: not given)."""

    dataset: str | None = None
    backbone: str | None = None
    weights: str | None = None
    key: str | None = None
    head: str | None = None
    frames: int | None = None
    stride: int | None = None
    train_clips: int | None = None
    loss: str | None = None
    sampler: str | None = None
    epochs: int | None = None
    batch: int | None = None
    lr: float | None = None
    patience: int | None = None
    select: str | None = None
    seed: int | None = None
    device: str | None = None
    stream: bool | None = None


MIN_FACE_FRACTION = 0.5  # a window with fewer face frames is not scored (the model never saw such clips)


@dataclass(frozen=True)
class WindowOptions:
    """Where windows fall and how they are shown: `window` seconds (None: the run's training clip
    length) every `hop` seconds; `smooth` seconds of exponential smoothing of the displayed
    probabilities (live; 0: off); windows with fewer face frames than `min_face_fraction` (None:
    MIN_FACE_FRACTION) are not scored."""

    window: float | None = None
    hop: float = 1.0
    smooth: float = 0.0
    min_face_fraction: float | None = None

    def for_run(self, clip_seconds: float) -> WindowOptions:
        """These options with the window and face fraction filled in, checked (a ConfigError names the fix)."""
        out = dataclasses.replace(
            self,
            window=self.window or clip_seconds,
            min_face_fraction=MIN_FACE_FRACTION if self.min_face_fraction is None else self.min_face_fraction,
        )
        if out.window <= 0 or out.hop <= 0 or out.smooth < 0:
            raise ConfigError(
                f"--window {out.window} / --hop {out.hop} / --smooth {out.smooth}: window and hop must be positive "
                f"seconds, smooth not negative; fix: e.g. --window 10 --hop 1 --smooth 5"
            )
        return out
