"""Image quality metrics: PSNR and SSIM (LPIPS only where its weights are already on disk)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from radistill.errors import BackendError


def psnr(pred: Tensor, target: Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (any matching shape)."""
    mse = float(((pred.float() - target.float()) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_tensor(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Differentiable mean SSIM of ``[H, W, C]`` images in [0, 1] (a loss term), in their dtype."""
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"ssim expects two [H, W, C] images of one shape, got {list(pred.shape)} and {list(target.shape)}")
    c1, c2 = 0.01**2, 0.03**2
    x = pred.permute(2, 0, 1)[:, None]  # [C, 1, H, W]
    y = target.permute(2, 0, 1)[:, None]
    g = _gaussian_window(window, sigma).to(pred)

    def blur(img: Tensor) -> Tensor:
        img = F.conv2d(img, g.view(1, 1, 1, -1))
        return F.conv2d(img, g.view(1, 1, -1, 1))

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean()


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004; Gaussian window 11, sigma 1.5, valid region),
    averaged over pixels and channels of ``[H, W, 3]`` images in [0, 1]."""
    return float(ssim_tensor(pred.detach().double(), target.detach().double(), window, sigma))


def lpips(pred: Tensor, target: Tensor) -> float:
    """LPIPS (AlexNet) if the ``lpips`` package and its backbone weights are available locally.

    radistill never downloads weights; without them this raises ``BackendError``.
    """
    try:
        import lpips as lpips_lib  # type: ignore[import-not-found]
    except ImportError:
        raise BackendError("LPIPS needs the 'lpips' package and its AlexNet weights on disk; they are not installed") from None
    try:
        model = lpips_lib.LPIPS(net="alex", verbose=False)
    except Exception as exc:  # a download attempt fails offline
        raise BackendError(f"LPIPS weights are not available locally ({exc})") from None
    to = lambda im: im.float().permute(2, 0, 1)[None] * 2 - 1  # noqa: E731
    with torch.no_grad():
        return float(model(to(pred), to(target)))
