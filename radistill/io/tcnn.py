"""tiny-cuda-nn's parameter layout, shared by the readers of Instant-NGP snapshots and of
nerfstudio's tiny-cuda-nn builds.

A fully fused (or CUTLASS) MLP stores, without biases, one row-major ``[outputs, inputs]``
matrix per layer: ``[width, in]``, then ``hidden_layers - 1`` times ``[width, width]``, then
``[out, width]``, with ``in`` and ``out`` padded to multiples of 16 (8 for CUTLASS); a
network with an input encoding stores the network's matrices first, then the encoding's
parameters (include/tiny-cuda-nn/network_with_input_encoding.h, src/fully_fused_mlp.cu).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def padded(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def mlp_shapes(n_in: int, n_out: int, width: int, hidden_layers: int, align: int = 16) -> list[tuple[int, int]]:
    """The ``(outputs, inputs)`` of each weight matrix, padding included."""
    return [(width, padded(n_in, align))] + [(width, width)] * (hidden_layers - 1) + [(padded(n_out, align), width)]


def split_matrices(params: np.ndarray, shapes: list[tuple[int, int]]) -> tuple[list[Tensor], np.ndarray]:
    """The matrices of ``shapes`` from the front of a flat parameter array, and what follows them."""
    out, at = [], 0
    for o, i in shapes:
        out.append(torch.from_numpy(np.ascontiguousarray(params[at:at + o * i], dtype=np.float32).reshape(o, i)))
        at += o * i
    return out, params[at:]
