"""How the things that determine a store are identified: a file by its content, and the weights
behind a backbone by one of three forms, which go into the store's config (and so its key):

    random:<seed>               a seeded random network (`--weights random` or `random:N`)
    <release>:sha256:<16 hex>   a named release (vggface2, casia-webface, imagenet), its file hashed
    file:sha256:<16 hex>        a weights file, by content (the path is not part of it)

This is the only place that writes or reads those strings.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from embed.errors import ConfigError

HASH_CHARS = 16


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def is_random(weights: str) -> bool:
    return weights == "random" or weights.startswith("random:")


def random_seed(weights: str) -> int:
    """The seed of `random` (0) or `random:N`."""
    if weights == "random":
        return 0
    try:
        return int(weights.split(":", 1)[1])
    except ValueError:
        raise ConfigError(f"weights '{weights}': the seed must be an integer; fix: e.g. random:0") from None


def file_identity(path: str | os.PathLike) -> str:
    return str(WeightsIdentity("file", "", file_sha256(path)[:HASH_CHARS]))


def release_identity(release: str, cached_file: str | os.PathLike) -> str:
    return str(WeightsIdentity("release", release, file_sha256(cached_file)[:HASH_CHARS]))


def random_identity(weights: str) -> str:
    return str(WeightsIdentity("random", str(random_seed(weights)), None))


@dataclass(frozen=True)
class WeightsIdentity:
    kind: str  # "random", "release" or "file"
    name: str  # the seed, the release's name, or "" for a file
    sha: str | None  # the first HASH_CHARS hex digits of the file's SHA-256 (None for random)

    @classmethod
    def parse(cls, text: str) -> WeightsIdentity:
        if text.startswith("random:"):
            return cls("random", text.split(":", 1)[1], None)
        name, sep, sha = text.partition(":sha256:")
        if not sep or not name or not sha:
            raise ValueError(f"not a weights identity: {text!r}")
        return cls("file", "", sha) if name == "file" else cls("release", name, sha)

    def __str__(self) -> str:
        if self.kind == "random":
            return f"random:{self.name}"
        return f"{'file' if self.kind == 'file' else self.name}:sha256:{self.sha}"

    def matches(self, weights: str | None) -> bool:
        """Do the weights a user names (as on the embed CLI: random[:N], a release, a file) give
        this identity? None matches anything."""
        if weights is None:
            return True
        if is_random(weights):
            return self.kind == "random" and self.name == str(random_seed(weights))
        path = Path(weights).expanduser()
        if path.is_file():
            return self.kind == "file" and file_sha256(path)[:HASH_CHARS] == self.sha
        return self.kind == "release" and self.name == weights

    def weights_arg(self, recorded: str | None) -> str:
        """The --weights value that rebuilds these weights; `recorded` is the value a run recorded
        (for a file: its path then, used if the file there still has this content)."""
        if self.kind == "random":
            return str(self)
        if self.kind == "release":
            return self.name
        if recorded and self.matches(recorded):
            return recorded
        raise ConfigError(
            f"the run's embeddings came from a weights file ({self}) that is not at "
            f"{recorded or 'a recorded path'}; fix: pass --weights /path/to/that/file"
        )
