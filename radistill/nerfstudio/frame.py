"""nerfstudio's scene frame against the frame a radistill field lives in.

A data parser moves the scene into ``scale * (R p + t)``; a field distilled from a nerfstudio
run lives in the original world frame (the teacher is imported there), while a field trained
from nerfstudio's photos lives in nerfstudio's frame itself (the identity).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


@dataclass
class SceneFrame:
    """nerfstudio's frame is ``scale * (rotation @ p + translation)`` of the field's frame."""

    rotation: Tensor  # [3, 3]
    translation: Tensor  # [3]
    scale: float = 1.0

    @classmethod
    def identity(cls) -> "SceneFrame":
        return cls(torch.eye(3), torch.zeros(3), 1.0)

    @classmethod
    def of_run(cls, run: Path) -> "SceneFrame":
        from radistill.io.nerfstudio import dataparser_transform

        rotation, translation, scale = dataparser_transform(Path(run))
        return cls(rotation.float(), translation.float(), scale)

    def points_to_field(self, p: Tensor) -> Tensor:  # [..., 3]
        r, t = self.rotation.to(p), self.translation.to(p)
        return (p / self.scale - t) @ r

    def directions_to_field(self, d: Tensor) -> Tensor:  # [..., 3]
        return d @ self.rotation.to(d)

    def c2w_to_field(self, c2w: Tensor) -> Tensor:
        """Camera-to-world matrices [N, 3 or 4, 4] of nerfstudio's frame in the field's.  # [N, 4, 4]"""
        out = torch.eye(4, dtype=c2w.dtype, device=c2w.device).repeat(c2w.shape[0], 1, 1)
        r = self.rotation.to(c2w)
        out[:, :3, :3] = r.T @ c2w[:, :3, :3]
        out[:, :3, 3] = self.points_to_field(c2w[:, :3, 3])
        return out
