"""Random numbers from radistill's seeded CPU generators, made on the device that uses them.

Runs are reproducible (and resumable) because every draw comes from one ``torch.Generator``
on the CPU whose state is checkpointed. Drawing millions of numbers there and copying them to
a GPU would cost more than the GPU's work, so for other devices a seed is drawn from the CPU
stream and the numbers are made on the device from it: still determined by the CPU state.
"""

from __future__ import annotations

import torch
from torch import Tensor


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str) -> Tensor:
    """Uniform numbers in [0, 1) of ``shape`` on ``device``, determined by ``generator``'s state."""
    device = torch.device(device)
    if device.type == "cpu":
        return torch.rand(shape, generator=generator)
    if generator is None:
        return torch.rand(shape, device=device)
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    return torch.rand(shape, generator=torch.Generator(device=device).manual_seed(seed), device=device)
