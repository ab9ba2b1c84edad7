"""Parity tests of the Triton kernels against their PyTorch references.

Without a CUDA device the kernels run through Triton's CPU interpreter: ``TRITON_INTERPRET``
must be set before Triton is imported, which is why it is set here, when this folder is
collected (nothing radistill imports at module level pulls Triton in). With a GPU the same
tests run natively. Inputs are small so that the interpreter stays fast.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="the Triton kernels need the triton package (pip install triton)")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def device() -> torch.device:
    return DEVICE
