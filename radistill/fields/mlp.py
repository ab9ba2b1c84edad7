"""``mlp``: NeRF's positional encoding followed by an MLP that outputs the junction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from radistill.fields.base import JUNCTION_DIM
from radistill.fields.neural import NeuralConfig, NeuralField, positional_encoding


@dataclass
class MLPConfig(NeuralConfig):
    """Options of the ``mlp`` kind (defaults sized for CPU training; NeRF used 8 x 256)."""

    n_freqs: int = 10
    """Frequencies of the positional encoding of x."""
    width: int = 128
    depth: int = 4
    """Hidden layers of the encoder MLP."""
    skip: int = -1
    """Hidden layer that receives the encoding again (NeRF: 4); -1 for none."""
    lr: float = 2e-3
    """Learning rate of the encoder when trained from photos."""
    distill_lr: float = 5e-3
    """Learning rate of the encoder when distilled from a teacher: dense point supervision
    takes a faster rate (lego, hashgrid teacher, 2 CPU minutes: 30.3 dB held-out at 2e-3,
    30.5 at 5e-3, 30.0 at 1e-2)."""


class PEMLPEncoder(nn.Module):
    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        self.n_freqs, self.skip = cfg.n_freqs, cfg.skip
        n_enc = 3 + 6 * cfg.n_freqs
        self.layers = nn.ModuleList(
            nn.Linear(n_enc if i == 0 else cfg.width + (n_enc if i == cfg.skip else 0), cfg.width) for i in range(cfg.depth)
        )
        self.out = nn.Linear(cfg.width, JUNCTION_DIM)

    def forward(self, u: Tensor) -> Tensor:  # [N, 3] in [0, 1] -> [N, 16]
        enc = positional_encoding(u * 2.0 - 1.0, self.n_freqs)
        h = enc
        for i, layer in enumerate(self.layers):
            if i == self.skip:
                h = torch.cat([h, enc], -1)
            h = torch.relu(layer(h))
        return self.out(h)


class MLPField(NeuralField):
    kind = "mlp"
    Config = MLPConfig
    student_batch_rays = 256  # a small MLP learns faster from many small steps than from few large ones
    # most of the time in stage 2 (point losses): lego, hashgrid teacher, 2 CPU minutes,
    # 30.3 dB held-out with shares 12.5/62.5/25 % against 29.9 with 12.5/25/62.5 %
    student_stage_steps = (375, 1875, 750)
    config: MLPConfig

    def __init__(self, config: MLPConfig, aabb: Tensor) -> None:
        super().__init__(config, aabb)
        self.encoder = PEMLPEncoder(config)

    @classmethod
    def distillation_start(cls, config: MLPConfig) -> MLPConfig:
        return dataclasses.replace(config, lr=config.distill_lr)

    def encoder_param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.encoder.parameters()), "lr": self.config.lr}]
