"""Real spherical harmonics of unit directions (degrees 0-3, i.e. up to 16 coefficients)."""

from __future__ import annotations

import torch
from torch import Tensor

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
      -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def sh_basis(d: Tensor, degree: int) -> Tensor:
    """The ``(degree + 1)^2`` real SH basis functions at unit directions ``d`` [N, 3].

    ``degree`` counts from 0 (constant) to 3 (16 functions); this is the basis of 3DGS and
    Instant-NGP's ``SphericalHarmonics`` encoding of degree 4 (which counts the bands).
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"spherical harmonics degree must be 0..3, got {degree}")
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2 * zz - xx - yy), C2[3] * xz, C2[4] * (xx - yy)]
    if degree >= 3:
        out += [
            C3[0] * y * (3 * xx - yy), C3[1] * xy * z, C3[2] * y * (4 * zz - xx - yy),
            C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[4] * x * (4 * zz - xx - yy),
            C3[5] * z * (xx - yy), C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, -1)


def _sphere_directions(n: int = 64) -> Tensor:
    """``n`` well-spread unit directions (a Fibonacci sphere), in float64.  # [n, 3]"""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    r = torch.sqrt(1.0 - z * z)
    phi = i * torch.pi * (3.0 - 5.0**0.5)
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


def rotate_sh(coefficients: Tensor, rotation: Tensor) -> Tensor:
    """SH coefficients of a colour seen through a rotation: the result at direction ``d`` is
    the input at ``rotation @ d``.

    Each band mixes only within itself; its mixing matrix is solved by least squares from the
    basis at well-spread directions and at their rotations (exact for a rotation: the band's
    functions span a rotation-invariant space).

    Args:
        coefficients: per band, degree 0 first (3DGS order).  # [N, K, C]
        rotation: a 3x3 rotation matrix.
    Returns:
        the rotated coefficients.  # [N, K, C]
    """
    k = coefficients.shape[1]
    degree = round(k**0.5) - 1
    d = _sphere_directions()
    rot = rotation.to(torch.float64)
    before, after = sh_basis(d, degree), sh_basis(d @ rot.T, degree)  # [n, K]
    out = coefficients.clone()
    for band in range(1, degree + 1):
        cols = slice(band * band, (band + 1) * (band + 1))
        mix = torch.linalg.lstsq(before[:, cols], after[:, cols]).solution  # new_j = sum_k mix[j, k] old_k
        out[:, cols] = torch.einsum("jk,nkc->njc", mix.to(coefficients.dtype), coefficients[:, cols])
    return out
