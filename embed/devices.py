"""Which torch device a `--device` option means, and the CPU thread pool: shared by both stages
(no decoding, no detection)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cache

import torch

from embed.errors import ConfigError


def resolve_device(device: str | torch.device | None) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine; fix: use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a torch device; fix: cpu, cuda or cuda:N") from None


@cache
def thread_pool(workers: int) -> ThreadPoolExecutor:
    """A shared pool for CPU work that releases the GIL (Pillow resizes, roi_align), sized to torch's threads."""
    return ThreadPoolExecutor(workers, thread_name_prefix="affectseq")
