"""The Triton compositing kernel against its reference, ``radistill.render.volume.composite``."""

from __future__ import annotations

import pytest
import torch

from radistill.render.volume import Samples, composite

OUTPUTS = ("rgb", "depth", "opacity", "weights", "optical_depth")


def packed_samples(device: torch.device, counts: list[int]) -> Samples:
    """Packed samples with the given count per ray (rays of no sample included), slots with gaps
    as occupancy skipping leaves them, and steps of varying length."""
    ray_ids = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    slots = torch.cat([torch.sort(torch.randperm(2 * c + 1)[:c]).values for c in counts])
    t = slots.float() * 0.05 + 0.5
    deltas = 0.02 + 0.06 * torch.rand(len(t))
    positions = torch.randn(len(t), 3)
    n_slots = int(slots.max()) + 1 if len(slots) else 1
    return Samples(*(x.to(device) for x in (ray_ids, slots, t, deltas, positions)), len(counts), n_slots)


def _run(samples, sigma, rgb, early_stop, before, backend, upstream):
    out = composite(sigma, rgb, samples, early_stop, before, backend=backend)
    values = [getattr(out, k) for k in OUTPUTS]
    loss = sum((v * g).sum() for v, g in zip(values, upstream) if g is not None)
    grads = torch.autograd.grad(loss, (sigma, rgb), allow_unused=True)
    return values, [torch.zeros_like(x) if g is None else g for x, g in zip((sigma, rgb), grads)]


@pytest.mark.parametrize("with_before", [False, True])
def test_values_and_gradients_match_the_reference(device, with_before):
    counts = [0, 1, 5, 37, 64, 3, 0, 90, 12, 64] * 3
    samples = packed_samples(device, counts)
    m, r = samples.ray_ids.numel(), samples.n_rays
    # dense enough that many rays stop early (transmittance under 1e-2) before their last sample
    sigma = (torch.rand(m, device=device) * 60).requires_grad_()
    rgb = torch.rand(m, 3, device=device, requires_grad=True)
    before = torch.rand(r, device=device) * 2 if with_before else None
    upstream = [torch.randn(r, 3, device=device), torch.randn(r, device=device), torch.randn(r, device=device),
                torch.randn(m, device=device), torch.randn(r, device=device)]
    expected, expected_grads = _run(samples, sigma, rgb, 1e-2, before, "torch", upstream)
    got, got_grads = _run(samples, sigma, rgb, 1e-2, before, "triton", upstream)
    # the early-termination rule is the reference's: the same samples get exactly zero weight
    stopped = expected[3] == 0
    assert stopped.sum() > m // 10
    assert torch.equal(got[3] == 0, stopped)
    for name, e, g in zip(OUTPUTS, expected, got):
        torch.testing.assert_close(g, e, atol=2e-5, rtol=1e-5, msg=name)
    for name, e, g in zip(("sigma", "rgb"), expected_grads, got_grads):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4, msg=f"gradient of {name}")


@pytest.mark.parametrize("used", [(0,), (0, 2), (3,)])
def test_gradients_when_only_some_outputs_are_used(device, used):
    samples = packed_samples(device, [4, 0, 17, 30])
    m, r = samples.ray_ids.numel(), samples.n_rays
    sigma = (torch.rand(m, device=device) * 10).requires_grad_()
    rgb = torch.rand(m, 3, device=device, requires_grad=True)
    shapes = [(r, 3), (r,), (r,), (m,), (r,)]
    upstream = [torch.randn(s, device=device) if i in used else None for i, s in enumerate(shapes)]
    _, expected = _run(samples, sigma, rgb, 1e-4, None, "torch", upstream)
    _, got = _run(samples, sigma, rgb, 1e-4, None, "triton", upstream)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_no_samples(device):
    samples = packed_samples(device, [0, 0, 0])
    sigma = torch.zeros(0, device=device, requires_grad=True)
    out = composite(sigma, torch.zeros(0, 3, device=device), samples, backend="triton")
    assert torch.equal(out.rgb, torch.zeros(3, 3, device=device)) and torch.equal(out.opacity, torch.zeros(3, device=device))
