"""Device names as users give them (``auto``, ``cpu``, ``cuda``, ``cuda:N``) turned into torch devices."""

from __future__ import annotations

import torch

from radistill.errors import ConfigError


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device for ``name``: ``auto`` is CUDA when there is one, else the CPU.

    Raises ``ConfigError`` for an unknown name, and for CUDA on a machine without it."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown --device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: radistill runs on cpu or cuda")
    return device
