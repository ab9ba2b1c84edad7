"""Fused GPU kernels (Triton), shipped as ``radistill.kernels``.

Each fused op lives in its own module here with its forward, backward and a thin autograd
wrapper; its plain-PyTorch reference lives in ``radistill/`` and is both the CPU path and the
test oracle:

========================  ===========================================  ===========================================
op                        Triton                                        PyTorch reference
========================  ===========================================  ===========================================
hash encoding             ``radistill.kernels.hash_encoding``           ``radistill.fields.hashgrid.hash_encode``
compositing               ``radistill.kernels.compositing``             ``radistill.render.volume.composite``
occupancy ray marching    ``radistill.kernels.marching``                ``radistill.render.volume.march``
========================  ===========================================  ===========================================

Callers choose with ``backend="auto" | "torch" | "triton"`` (:func:`resolve_backend`). ``auto``
means Triton for CUDA tensors when Triton imports, else torch. Asking for ``triton`` where it
cannot run raises ``radistill.errors.BackendError`` at that call. On a CPU the kernels run
through Triton's interpreter when ``TRITON_INTERPRET=1`` is set before Triton is imported (the
parity tests do this); that is for testing, not speed.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

import torch

Backend = Literal["auto", "torch", "triton"]
BACKENDS = ("auto", "torch", "triton")


@lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether Triton can be imported here (it is optional; the CPU path never needs it)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """Whether Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that runs on ``device``: ``"torch"`` or ``"triton"``.

    Raises:
        BackendError: ``backend`` is unknown, or ``"triton"`` was asked for where Triton is not
            installed or the tensors are not on a CUDA device (outside the interpreter).
    """
    from radistill.errors import BackendError

    if backend not in BACKENDS:
        raise BackendError(f"unknown kernel backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return "torch"
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if not triton_available():
        raise BackendError("backend='triton' needs the triton package (pip install triton); "
                           "use backend='torch' or 'auto' on this machine")
    if device.type != "cuda" and not interpreting():
        raise BackendError(f"backend='triton' needs CUDA tensors, got {device.type} tensors "
                           "(set TRITON_INTERPRET=1 before importing triton to run the kernels on a CPU for testing)")
    return "triton"
