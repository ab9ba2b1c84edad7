"""The in-memory scene every reader returns, and the checks shared by all readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor

from radistill.cameras import Cameras
from radistill.errors import DatasetError


@dataclass
class SceneData:
    """Posed images of one scene with its split and bounds.

    Attributes:
        images: RGB in [0, 1], composited on ``background`` where the source had alpha.  # [N, H, W, 3]
        cameras: one camera per image.
        train_indices, test_indices: the split (indices into ``images``).
        aabb: scene bounds.  # [2, 3]
        background: colour behind the scene.  # [3]
        alphas: coverage masks where the source had them.  # [N, H, W] or None
        extras: per-image ground truth such as ``depth`` [N, H, W] and ``normal`` [N, H, W, 3].
        holdout: how the test split was chosen (``"file"`` or ``"i%8==0"``).
    """

    name: str
    images: Tensor
    cameras: Cameras
    train_indices: list[int]
    test_indices: list[int]
    aabb: Tensor
    background: Tensor
    alphas: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    holdout: str = "file"

    def split(self, name: str) -> tuple[Tensor, Cameras]:
        """Images and cameras of ``"train"``, ``"test"`` or ``"all"``."""
        if name == "all":
            idx = list(range(len(self.cameras)))
        elif name in ("train", "test"):
            idx = self.train_indices if name == "train" else self.test_indices
        else:
            raise DatasetError(f"{self.name}: unknown split {name!r}; expected 'train', 'test' or 'all'")
        return self.images[idx], self.cameras[idx]


def holdout_split(n: int, every: int = 8) -> tuple[list[int], list[int]]:
    """The deterministic hold-out used when no split file exists: ``i % every == 0`` is test."""
    test = [i for i in range(n) if i % every == 0]
    train = [i for i in range(n) if i % every != 0]
    return train, test


def check_poses(c2w: np.ndarray, source: Path | str) -> None:
    """Raise a clear error for non-finite or non-rigid camera-to-world matrices."""
    for i, m in enumerate(c2w):
        if not np.all(np.isfinite(m)):
            raise DatasetError(f"{source}: pose of frame {i} has non-finite values")
        rot = m[:3, :3]
        if np.abs(rot.T @ rot - np.eye(3)).max() > 1e-2 or np.linalg.det(rot) < 0:
            raise DatasetError(
                f"{source}: pose of frame {i} is not rigid (its 3x3 rotation part is not orthonormal "
                f"with determinant +1)")


def load_rgba(path: Path, source: Path | str) -> np.ndarray:
    """Read an image as float32 RGBA in [0, 1] (alpha 1 where the file has none).  # [H, W, 4]"""
    import imageio.v3 as iio

    if not path.exists():
        raise DatasetError(f"{source}: image {path} does not exist")
    try:
        img = iio.imread(path)
    except Exception as exc:  # imageio raises many types for unreadable files
        raise DatasetError(f"{source}: cannot read image {path}: {exc}") from None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    scale = 65535.0 if img.dtype == np.uint16 else 255.0 if img.dtype == np.uint8 else 1.0
    img = img.astype(np.float32) / scale
    if img.shape[-1] == 3:
        img = np.concatenate([img, np.ones_like(img[..., :1])], -1)
    return img[..., :4]


def resize_rgba(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-resize an RGBA image with premultiplied alpha (no dark fringes).  # [h, w, 4]"""
    if img.shape[1] == width and img.shape[0] == height:
        return img
    from PIL import Image

    premult = np.concatenate([img[..., :3] * img[..., 3:], img[..., 3:]], -1)
    chans = [np.asarray(Image.fromarray(premult[..., c]).resize((width, height), Image.Resampling.BOX)) for c in range(4)]
    out = np.stack(chans, -1)
    alpha = out[..., 3:]
    rgb = np.where(alpha > 1e-6, out[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    return np.concatenate([np.clip(rgb, 0, 1), alpha], -1).astype(np.float32)


def load_images(paths: list[Path], source: Path | str, downscale: float = 1.0) -> np.ndarray:
    """Read, check and resize a list of images; mixed sizes are an error.  # [N, H, W, 4]"""
    if not paths:
        raise DatasetError(f"{source}: no frames listed")
    images = []
    first_shape = None
    for path in paths:
        img = load_rgba(path, source)
        if first_shape is None:
            first_shape = img.shape[:2]
        elif img.shape[:2] != first_shape:
            raise DatasetError(
                f"{source}: images have mixed sizes: {paths[0].name} is {first_shape[1]}x{first_shape[0]} but "
                f"{path.name} is {img.shape[1]}x{img.shape[0]}")
        if downscale != 1.0:
            img = resize_rgba(img, round(img.shape[1] / downscale), round(img.shape[0] / downscale))
        images.append(img)
    return np.stack(images)


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """RGBA over a constant background colour.  # [..., 3]"""
    return rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:]) * background
