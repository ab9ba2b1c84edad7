"""Fused GPU kernels (Triton), shipped as ``radistill.kernels``.

Each fused op will live here with its forward, backward and a thin autograd wrapper; its
plain-PyTorch reference lives in ``radistill/`` (for instance ``radistill.fields.hashgrid.
hash_encode`` and ``radistill.render.volume.composite``) and is both the CPU path and the test
oracle. Callers choose with ``backend="auto" | "torch" | "triton"``; a backend that is not
installed raises ``radistill.errors.BackendError`` at the call that needs it.
"""

from __future__ import annotations


def triton_available() -> bool:
    """Whether Triton can be imported here (it is optional; the CPU path never needs it)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
