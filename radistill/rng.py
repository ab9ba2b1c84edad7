"""Random numbers from radistill's seeded CPU generators, made on the device that uses them.

Runs are reproducible (and resumable) because every draw comes from one ``torch.Generator``
on the CPU whose state is checkpointed. Drawing millions of numbers there and copying them to
a GPU would cost more than the GPU's work, so for other devices a seed is drawn from the CPU
stream and the numbers are made on the device from it: still determined by the CPU state.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

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


@contextlib.contextmanager
def deterministic_on_cpu(device: torch.device | str) -> Iterator[None]:
    """While it is open, PyTorch's deterministic algorithms on a CPU ``device`` (the setting
    before it is restored after).

    On a CPU with more than one thread, the backward pass of indexing with repeated indices
    (``x[idx]``: the rasteriser's corners, the renderer's gathers) adds with parallel atomics,
    in an order that changes from run to run: a vertex of a baked mesh then differed in its
    last bit between two identical runs about one time in 50, and an interrupted run did not
    resume exactly. The deterministic version is a serial loop, which measured faster on two
    cores (62 against 75 ms for 1.2M gathered rows). Not on a GPU, whose atomics are fast and
    whose deterministic mode also constrains cuBLAS. Memory is not filled on allocation."""
    if torch.device(device).type != "cpu" or torch.are_deterministic_algorithms_enabled():
        yield
        return
    import torch.utils.deterministic as det

    # the flag itself: torch.use_deterministic_algorithms also imports torch._inductor's config
    # (a second per process, for torch.compile, which radistill does not use)
    set_flag = getattr(torch._C, "_set_deterministic_algorithms", None) or torch.use_deterministic_algorithms
    fill = det.fill_uninitialized_memory
    set_flag(True, warn_only=True)
    det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        set_flag(False, warn_only=False)
        det.fill_uninitialized_memory = fill
