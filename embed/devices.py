"""Which torch device a `--device` option means: shared by both stages (no decoding, no detection).
torch is imported when a device is resolved, not with this module: a command that fails on its
options or files says so before seconds of imports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from embed.errors import ConfigError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    import torch

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
