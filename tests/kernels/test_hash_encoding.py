"""The Triton hash encoding against its reference, ``radistill.fields.hashgrid.hash_encode``."""

from __future__ import annotations

import pytest
import torch

from radistill.fields.hashgrid import HashEncoding, hash_encode


def _points(n: int, device: torch.device) -> torch.Tensor:
    u = torch.rand(n, 3, device=device)
    # the cube's corners and faces, where a corner of the cell sits one past the grid
    u[:6] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.0, 1.0], [0.5, 0.5, 0.5],
                          [1.0, 0.25, 0.0]], device=device)
    return u


def assert_fp32_parity(enc: HashEncoding, u: torch.Tensor) -> None:
    """Values and table gradients (random upstream) of the kernel against the reference, fp32 table."""
    table = torch.randn(enc.table.shape, device=u.device, requires_grad=True)
    expected = hash_encode(u, table, enc.layout_tensors(), backend="torch")
    got = hash_encode(u, table, enc.layout_tensors(), backend="triton")
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    upstream = torch.randn_like(expected)
    torch.testing.assert_close(torch.autograd.grad(got, table, upstream)[0],
                               torch.autograd.grad(expected, table, upstream)[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("features", [1, 2, 4, 8])
def test_forward_and_table_gradient_match_the_reference(device, dtype, features):
    # 6 levels with a 2^10 table: the two coarse levels are dense, the four fine ones hashed
    enc = HashEncoding(levels=6, features=features, log2_table=10, base_resolution=4, max_resolution=64).to(device)
    assert [lv["dense"] for lv in enc.layout] == [True, True, False, False, False, False]
    layout = enc.layout_tensors()
    table = torch.randn(enc.table.shape, device=device).to(dtype).requires_grad_()
    reference_table = table.detach().float().requires_grad_()  # the reference in fp32 on the same values
    u = _points(300, device)
    expected = hash_encode(u, reference_table, layout, backend="torch")
    got = hash_encode(u, table, layout, backend="triton")
    assert got.dtype == dtype and got.shape == expected.shape
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=4e-3, rtol=2e-3)  # fp16 output rounding
    torch.testing.assert_close(got.float(), expected, **tol)

    upstream = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad(expected, reference_table, upstream)
    (got_grad,) = torch.autograd.grad(got, table, upstream.to(dtype))
    assert got_grad.dtype == dtype
    if dtype == torch.float32:  # every row the points touch gets a gradient; the rest stay exactly zero
        assert torch.equal(got_grad != 0, expected_grad != 0)
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=4e-3, rtol=2e-3)
    torch.testing.assert_close(got_grad.float(), expected_grad, **tol)


@pytest.mark.parametrize("level_fastest", [True, False])
@pytest.mark.parametrize("levels,log2_table", [(1, 12), (16, 12)])
def test_any_level_count_and_hash_collisions(device, levels, log2_table, level_fastest, monkeypatch):
    # 16 levels up to resolution 512 in a 2^12 table: the fine levels collide heavily, so the
    # backward pass must add many points into the same rows (in either order of its programs)
    import radistill.kernels.hash_encoding as kernel

    monkeypatch.setattr(kernel, "BACKWARD_LEVEL_FASTEST", level_fastest)
    enc = HashEncoding(levels=levels, features=2, log2_table=log2_table, base_resolution=16, max_resolution=512).to(device)
    assert_fp32_parity(enc, _points(500, device))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_no_points(device, backend):
    # an empty batch happens (a distillation step whose rays all miss the occupied cells)
    enc = HashEncoding(levels=4, features=2, log2_table=10, base_resolution=4, max_resolution=32).to(device)
    out = hash_encode(torch.zeros(0, 3, device=device), enc.table, enc.layout_tensors(), backend=backend)
    assert out.shape == (0, 8)
    assert torch.autograd.grad(out.sum(), enc.table)[0].abs().sum() == 0


def test_unsupported_feature_count_is_refused(device):
    enc = HashEncoding(levels=2, features=3, log2_table=8, base_resolution=4, max_resolution=8).to(device)
    with pytest.raises(ValueError, match="1, 2, 4 or 8 features"):
        hash_encode(torch.rand(4, 3, device=device), enc.table, enc.layout_tensors(), backend="triton")


def test_points_outside_the_unit_cube_wrap_like_the_reference(device):
    # dense levels take Python's modulo of a negative index, not C's (which would read before the table)
    enc = HashEncoding(levels=6, features=2, log2_table=10, base_resolution=4, max_resolution=64).to(device)
    assert_fp32_parity(enc, torch.rand(400, 3, device=device) * 2.0 - 0.5)  # [-0.5, 1.5)


def test_auto_uses_the_reference_for_feature_counts_the_kernel_lacks(device, monkeypatch):
    import radistill.fields.hashgrid as hashgrid

    monkeypatch.setattr(hashgrid, "resolve_backend", lambda backend, dev: "triton")  # as on a GPU with Triton
    enc = HashEncoding(levels=2, features=3, log2_table=8, base_resolution=4, max_resolution=8).to(device)
    u = torch.rand(10, 3, device=device)
    torch.testing.assert_close(hash_encode(u, enc.table, enc.layout_tensors(), backend="auto"),
                               hash_encode(u, enc.table, enc.layout_tensors(), backend="torch"))
