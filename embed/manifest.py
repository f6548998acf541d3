"""The only reader of data_manifest.yaml: validated on load, paths resolved against the file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from embed.errors import ConfigError

DEFAULT_STATES = ["Boredom", "Engagement", "Confusion", "Frustration"]
SPLITS = ("Train", "Validation", "Test")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleSpec(_Strict):
    """How the built-in synthetic sample is generated (see embed/sample.py)."""

    seed: int = 0
    train: int = Field(96, ge=1)
    validation: int = Field(24, ge=1)
    test: int = Field(32, ge=1)
    subjects: dict[str, int] = Field(default_factory=lambda: {"Train": 6, "Validation": 2, "Test": 3})
    fps: float = Field(10.0, gt=0)
    seconds: float = Field(3.0, gt=0)
    width: int = Field(640, ge=64)
    height: int = Field(480, ge=64)


class DatasetSpec(_Strict):
    layout: Literal["daisee", "csv"]
    root: str
    # csv layout: the label CSV (relative to root) with columns `path`, `split` and the states.
    csv: str | None = None
    # When set, `root` is generated on first use by `python -m embed sample`.
    sample: SampleSpec | None = None


class Manifest(_Strict):
    cache_dir: str = "cache"
    runs_dir: str = "runs"
    default_dataset: str | None = None  # None: "sample" if defined, else the first dataset
    states: list[str] = Field(default_factory=lambda: list(DEFAULT_STATES))
    levels: int = Field(4, ge=2)
    datasets: dict[str, DatasetSpec]

    # Filled in by load_manifest; not a YAML key.
    path: Path = Field(default=Path("data_manifest.yaml"), exclude=True)

    @field_validator("states")
    @classmethod
    def _states_unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v) or not v:
            raise ValueError("states must be a non-empty list of distinct names")
        return v

    def resolve(self, value: str, key: str) -> Path:
        """Expand ~ and $VARS, make relative paths relative to the manifest file."""
        expanded = os.path.expanduser(os.path.expandvars(value))
        unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
        if unset:
            raise ConfigError(
                f"{self.path}: key '{key}' uses environment variable {unset[0]} which is not set; "
                f"fix: export {unset[0]}=/path/to/data or edit '{key}' in the manifest"
            )
        p = Path(expanded)
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    @property
    def cache_path(self) -> Path:
        return self.resolve(self.cache_dir, "cache_dir")

    @property
    def runs_path(self) -> Path:
        return self.resolve(self.runs_dir, "runs_dir")

    def dataset(self, name: str | None) -> tuple[str, DatasetSpec]:
        name = name or self.default_dataset or ("sample" if "sample" in self.datasets else next(iter(self.datasets)))
        if name not in self.datasets:
            raise ConfigError(
                f"{self.path}: no dataset '{name}' under 'datasets' (known: {', '.join(self.datasets)}); "
                f"fix: pass --dataset with one of those or add it to the manifest"
            )
        return name, self.datasets[name]

    def dataset_root(self, name: str, *, must_exist: bool = True) -> Path:
        spec = self.datasets[name]
        root = self.resolve(spec.root, f"datasets.{name}.root")
        if must_exist and not root.is_dir():
            raise ConfigError(
                f"{self.path}: datasets.{name}.root = {root} does not exist; "
                f"fix: point 'datasets.{name}.root' at the dataset's folder"
            )
        return root


def _describe(err: dict) -> str:
    loc = ".".join(str(x) for x in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key '{loc}'; fix: remove it or check its spelling (see the comments in the manifest)"
    if err["type"] == "missing":
        return f"missing key '{loc}'; fix: add it"
    return f"key '{loc}': {err['msg']}; fix: correct the value"


def load_manifest(path: str | os.PathLike) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: manifest not found; fix: pass --manifest or run from the project root")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where} YAML syntax error: {problem}; fix: correct the YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top; fix: see data_manifest.yaml")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_describe(e.errors()[0])}") from None
    manifest.path = path.resolve()
    return manifest
