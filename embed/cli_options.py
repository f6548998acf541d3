"""The options both stages' command lines share, defined once, and option groups: a dataclass of the
library (embed.stores.StoreQuery, sequence's settings) given on the command line as one option per field.

typer has no option groups: `with_options` rewrites a command's signature so that a parameter typed
with a group's dataclass appears as that dataclass's fields, each with its typer option, and the
command receives the dataclass built from them (hand-written: no library does this for typer).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Any

import typer

from embed.cluster import ClusterChoice  # noqa: F401  (the group CLUSTER_OPTIONS gives)
from embed.extraction import DetectorConfig

ManifestOpt = Annotated[Path, typer.Option("--manifest", "-m", help="Data manifest (YAML).")]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", "-d", help="Dataset name [default: the manifest's default_dataset].")
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        "-w",
        help="A named release (fer2013, vggface2, casia-webface, imagenet), a state-dict file, or random[:seed]; "
        "comma-separated, one per backbone, where several are named [default: each backbone's release].",
    ),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N or auto [default: auto].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object, last on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info logs.")]
KeyOpt = Annotated[str | None, typer.Option(help="Pick the store by key (prefix).")]
MaxFpsOpt = Annotated[float | None, typer.Option("--max-fps", help="Keep at most this many frames per second.")]
_DET = DetectorConfig()  # the detector's defaults, for the help texts
DetectEveryOpt = Annotated[
    int | None,
    typer.Option("--detect-every", min=1, help=f"Run MTCNN on every k-th frame [default: {_DET.detect_every}]."),
]
DetectWidthOpt = Annotated[
    int | None,
    typer.Option(
        "--detect-width", min=32, help=f"Frames shrunk to this width for detection [default: {_DET.detect_width}]."
    ),
]
MinFaceOpt = Annotated[
    int | None,
    typer.Option("--min-face-size", min=8, help=f"Smallest face in detection pixels [default: {_DET.min_face_size}]."),
]
StoreBackboneOpt = Annotated[
    str | None,
    typer.Option(
        "--backbone",
        "-b",
        help="fer2013, inception, resnet18, fec or an imported store's name; `run` takes several, comma-separated "
        "(one decode and detection feeds them all) [default: run: inception; info, verify: the dataset's one store].",
    ),
]

# The option that gives each field of ClusterChoice (embed run and sequence experiments).
CLUSTER_OPTIONS: dict[str, Any] = {
    "workers": Annotated[int | None, typer.Option(min=1, help="Run on a local dask cluster of N worker processes.")],
    "scheduler": Annotated[str | None, typer.Option(help="Run on this dask scheduler's cluster (tcp://HOST:PORT).")],
}

# The option that gives each field of StoreQuery (the defaults are the dataclass's).
STORE_OPTIONS: dict[str, Any] = {
    "manifest": ManifestOpt,
    "dataset": DatasetOpt,
    "backbone": StoreBackboneOpt,
    "weights": WeightsOpt,
    "max_fps": MaxFpsOpt,
    "detect_every": DetectEveryOpt,
    "detect_width": DetectWidthOpt,
    "min_face_size": MinFaceOpt,
}


def with_options(group: type, options: dict[str, Any]) -> Callable[[Callable], Callable]:
    """A decorator: the command's parameter typed `group` (a dataclass) is given on the command line
    as one option per field, `options[field]`, with the field's default; the command receives the
    dataclass built from them. Decorators stack, one group each."""

    def expand(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        params, grouped = [], None
        for p in signature.parameters.values():
            if p.annotation is not group:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
                continue
            grouped = p.name
            for f in fields(group):
                default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
                kind = inspect.Parameter.KEYWORD_ONLY
                params.append(inspect.Parameter(f.name, kind, default=default, annotation=options[f.name]))
        if grouped is None:
            raise TypeError(f"{command.__name__} has no parameter of type {group.__name__}")

        @functools.wraps(command)
        def parsed(**given):
            given[grouped] = group(**{f.name: given.pop(f.name) for f in fields(group)})
            return command(**given)

        parsed.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        parsed.__annotations__ = {p.name: p.annotation for p in params}
        return parsed

    return expand


def key_values(pairs: list[str] | None, option: str, example: str) -> dict[str, str]:
    """Repeated `--option KEY=VALUE` values as a dict (a ConfigError names a malformed one)."""
    from embed.errors import ConfigError

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} {pair!r}: not KEY=VALUE; fix: e.g. {option} {example}")
        out[key] = value
    return out
