"""A ``hashgrid`` field renders and learns the same with the Triton kernels as with the references:
the three fused ops wired together behind ``backend``."""

from __future__ import annotations

import pytest
import torch

from radistill.cameras import orbit_poses, pinhole_cameras
from radistill.errors import BackendError
from radistill.fields import create_field
from radistill.kernels import resolve_backend


def _field(device, backend):
    torch.manual_seed(0)
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    field = create_field("hashgrid", aabb, levels=8, log2_table=12, max_resolution=128, samples_per_ray=64,
                         occupancy_resolution=16, backend=backend).to(device)
    with torch.no_grad():  # a blob in the middle, so that rays stop early and cells are empty
        field.encoder.grid.table.normal_(0, 1.0)
        field.occupancy.occupied.copy_(torch.rand(16**3) < 0.6)
    return field


def test_render_and_gradients_match_the_reference(device):
    cams = pinhole_cameras(orbit_poses(1, 3.0), 12)
    rays = cams.image_rays(0).to(device)
    results = []
    for backend in ("torch", "triton"):
        field = _field(device, backend)
        out = field.render(rays, torch.ones(3, device=device), perturb=True, generator=torch.Generator().manual_seed(2))
        loss = (out.rgb ** 2).sum() + out.depth.sum() + out.opacity.sum()
        grads = torch.autograd.grad(loss, [p for p in field.parameters()])
        results.append((out, grads))
    (ref, ref_grads), (got, got_grads) = results
    assert got.n_samples == ref.n_samples > 1000
    for name in ("rgb", "depth", "opacity", "weights"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), atol=1e-5, rtol=1e-4, msg=name)
    assert ref.opacity.max() > 0.5  # the blob is really seen, so compositing is exercised
    for g, e in zip(got_grads, ref_grads):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-3)


def test_backend_choice(device, monkeypatch):
    assert resolve_backend("torch", device) == "torch"
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert resolve_backend("triton", device) == "triton"
    with pytest.raises(BackendError, match="unknown kernel backend 'cuda'"):
        resolve_backend("cuda", device)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendError, match="needs CUDA tensors, got cpu"):
        resolve_backend("triton", torch.device("cpu"))
    import radistill.kernels as kernels

    monkeypatch.setattr(kernels, "triton_available", lambda: False)
    with pytest.raises(BackendError, match="needs the triton package"):
        resolve_backend("triton", device)
    assert resolve_backend("auto", device) == "torch"
