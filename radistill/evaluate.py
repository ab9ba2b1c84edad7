"""Rendering whole images from a field and scoring them against a split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from radistill.cameras import Cameras
from radistill.metrics import psnr, ssim


def render_image(field: Any, cameras: Cameras, index: int, background: Tensor | None = None,
                 chunk: int = 8192) -> dict[str, Tensor]:
    """Render one full image at bounded memory: ``rgb`` [H, W, 3], ``depth`` and ``opacity`` [H, W]."""
    with torch.no_grad():
        out = field.render_image(cameras, index, background, chunk)
    return {"rgb": out["rgb"].detach().cpu().clamp(0, 1), "depth": out["depth"].detach().cpu(),
            "opacity": out["opacity"].detach().cpu()}


def save_png(path: Path, image: Tensor) -> None:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, (image.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))


def evaluate_split(field: Any, scene: Any, split: str = "test", save_dir: Path | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """PSNR and SSIM of every image of a split, and their means.

    Returns:
        ``{"psnr": mean, "ssim": mean, "images": [{"index", "psnr", "ssim"}, ...]}``
    """
    images, cameras = scene.split(split)
    indices = scene.train_indices if split == "train" else scene.test_indices if split == "test" else list(range(len(images)))
    per_image = []
    field.eval()
    from tqdm.auto import tqdm

    for k in tqdm(range(len(cameras)), desc=f"eval {split}", unit="image", disable=not progress, leave=False):
        pred = render_image(field, cameras, k, scene.background)["rgb"]
        per_image.append({"index": indices[k], "psnr": psnr(pred, images[k]), "ssim": ssim(pred, images[k])})
        if save_dir is not None:
            save_png(Path(save_dir) / f"{split}_{indices[k]:03d}.png", torch.cat([pred, images[k]], 1))
    field.train()
    return {"psnr": float(np.mean([p["psnr"] for p in per_image])), "ssim": float(np.mean([p["ssim"] for p in per_image])),
            "images": per_image}
