import math

import pytest
import torch

from radistill.errors import ConfigError
from radistill.fields import NEURAL_KINDS, create_field
from radistill.fields.hashgrid import HashEncoding, level_layout
from radistill.fields.neural import density_activation
from radistill.fields.sh import sh_basis
from radistill.fields.tensorf import resolution_at

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def reference_hash_encoding(u, table, layout, features):
    """Slow, literal tiny-cuda-nn grid encoding: one point, one level, one corner at a time."""
    out = torch.zeros(u.shape[0], len(layout) * features, dtype=torch.float64)
    for n in range(u.shape[0]):
        for lvl, lv in enumerate(layout):
            pos = [float(u[n, k]) * lv["scale"] + 0.5 for k in range(3)]
            grid = [math.floor(p) for p in pos]
            frac = [p - g for p, g in zip(pos, grid)]
            for corner in range(8):
                c = [grid[k] + ((corner >> (2 - k)) & 1) for k in range(3)]
                w = 1.0
                for k in range(3):
                    w *= frac[k] if (corner >> (2 - k)) & 1 else 1.0 - frac[k]
                if lv["dense"]:  # tcnn: index % hashmap_size on every level
                    idx = (c[0] + c[1] * lv["resolution"] + c[2] * lv["resolution"] ** 2) % lv["size"]
                else:
                    idx = (c[0] ^ ((c[1] * 2654435761) & 0xFFFFFFFF) ^ ((c[2] * 805459861) & 0xFFFFFFFF)) % lv["size"]
                out[n, lvl * features:(lvl + 1) * features] += w * table[lv["offset"] + idx].double()
    return out


@pytest.mark.parametrize("features", [1, 2, 4])
def test_hash_encoding_matches_literal_tcnn_reference(features):
    enc = HashEncoding(levels=6, features=features, log2_table=10, base_resolution=4, max_resolution=64, init_scale=1.0)
    layout = enc.layout
    assert any(lv["dense"] for lv in layout) and any(not lv["dense"] for lv in layout)
    u = torch.rand(40, 3)
    u[0] = torch.tensor([0.0, 1.0, 0.5])  # the cube's faces
    u[1] = torch.tensor([1.0, 1.0, 1.0])  # the far corner: corners one past the grid wrap
    got = enc(u)
    want = reference_hash_encoding(u, enc.table.detach(), layout, features)
    assert torch.allclose(got.double(), want, atol=1e-5)


def test_all_dense_layout_stays_inside_the_table_at_the_far_corner():
    enc = HashEncoding(levels=4, features=2, log2_table=19, base_resolution=4, max_resolution=24, init_scale=1.0)
    assert all(lv["dense"] for lv in enc.layout)
    u = torch.ones(3, 3)
    want = reference_hash_encoding(u, enc.table.detach(), enc.layout, 2)
    assert torch.allclose(enc(u).double(), want, atol=1e-5)


def test_hash_encoding_gradient_matches_autograd_of_a_gather():
    enc = HashEncoding(levels=5, features=2, log2_table=9, base_resolution=4, max_resolution=96, init_scale=1.0)
    u = torch.rand(300, 3)
    upstream = torch.randn(300, 10)
    (enc(u) * upstream).sum().backward()
    fast = enc.table.grad.clone()
    # the same encoding written as an explicit gather, differentiated by autograd
    from radistill.fields.hashgrid import hash_corner_indices, trilinear_weights

    lay = enc.layout_tensors()
    table = enc.table.detach().clone().requires_grad_()
    pos = u[None] * lay["scale"][:, None, None] + 0.5
    rows = hash_corner_indices(torch.floor(pos).to(torch.int32), lay).long()  # [L, N, 8]
    w = trilinear_weights(pos - torch.floor(pos))
    feats = (table[rows] * w[..., None]).sum(2)  # [L, N, F]
    (feats.transpose(0, 1).reshape(300, -1) * upstream).sum().backward()
    assert torch.allclose(fast, table.grad, atol=1e-5)


def test_tcnn_level_layout():
    # 16 levels, T = 2^19, base 16, per-level scale 1.5: the dense levels are the ones whose
    # resolution^3 fits 2^19, and every level size is a multiple of 8
    layout = level_layout(16, 19, 16, 1.5)
    assert layout[0]["scale"] == 15.0 and layout[0]["resolution"] == 16 and layout[0]["size"] == 16**3
    assert layout[1]["resolution"] == math.ceil(16 * 1.5 - 1) + 1
    for lv in layout:
        assert lv["size"] % 8 == 0
        assert lv["dense"] == (lv["resolution"] ** 3 <= 1 << 19)
        assert lv["size"] == (1 << 19 if not lv["dense"] else (lv["resolution"] ** 3 + 7) // 8 * 8)
    assert all(b["offset"] == a["offset"] + a["size"] for a, b in zip(layout, layout[1:]))


def test_density_activation_clamps_and_keeps_inward_gradients():
    raw = torch.tensor([-5.0, -2.0, 0.0, 3.0, 7.0, 9.0], requires_grad=True)
    sigma = density_activation(raw)
    assert torch.allclose(sigma, torch.exp(torch.tensor([-2.0, -2.0, 0.0, 3.0, 7.0, 7.0])))
    # loss that wants more density everywhere: the clamped-low unit gets a gradient, the
    # clamped-high unit (already too dense to show it) does not
    (-sigma.sum()).backward()
    g = raw.grad
    assert g[0] < 0 and g[5] == 0 and g[2] < 0
    raw.grad = None
    density_activation(raw).sum().backward()  # wants less density
    assert raw.grad[0] == 0 and raw.grad[5] > 0


def test_sh_basis_is_orthonormal_on_the_sphere():
    n = 20000
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = i * math.pi * (3 - math.sqrt(5))
    r = torch.sqrt(1 - z * z)
    d = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)
    y = sh_basis(d, 3)
    gram = 4 * math.pi * (y.T @ y) / n
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=2e-3)


@pytest.mark.parametrize("kind", NEURAL_KINDS)
def test_every_neural_kind_honours_the_contract(kind):
    field = create_field(kind, AABB)
    x = torch.rand(64, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    out = field.query(x, d)
    assert out.junction.shape == (64, 16)
    assert torch.allclose(out.sigma, density_activation(out.junction[:, 0]))
    assert torch.allclose(field.density(x), out.sigma)
    assert ((out.rgb >= 0) & (out.rgb <= 1)).all()
    # colour depends on the view direction through the shared decoder
    with torch.no_grad():
        for p in field.decoder.parameters():
            p.normal_(0, 0.5)
    rgb2 = field.query(x, -d).rgb
    assert not torch.allclose(field.query(x, d).rgb, rgb2)
    # gradients reach every parameter group
    loss = field.query(x, d).rgb.sum() + field.query(x, d).sigma.sum()
    loss.backward()
    for g in field.param_groups():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in g["params"])


def test_unknown_kind_and_bad_options_are_clear():
    with pytest.raises(ConfigError, match="unknown kind 'voxels'; known kinds: mlp, hashgrid"):
        create_field("voxels", AABB)
    with pytest.raises(ConfigError, match="unknown HashGridConfig fields \\['tabel_size'\\]"):
        create_field("hashgrid", AABB, tabel_size=3)
    with pytest.raises(ConfigError, match="aabb"):
        create_field("mlp", torch.tensor([[0.0, 0, 0], [0.0, 1, 1]]))


@pytest.mark.parametrize("kind", ["tensorf-vm", "tensorf-cp"])
def test_tensorf_upsampling_keeps_the_field(kind):
    field = create_field(kind, AABB, resolution=16, final_resolution=64, upsample_steps=(10, 20))
    with torch.no_grad():  # smooth factors, as a trained field has: resampling must preserve them
        for p in field.encoder.factors():  # channels last: [3, R, C] lines, [3, R, R, C] planes
            r, c = p.shape[1], p.shape[-1]
            a = torch.linspace(0, 1, r)
            if p.ndim == 3:
                value = torch.sin(2.0 * a[None, :, None] + torch.rand(3, 1, c) * 6)
            else:
                value = torch.sin(2.0 * a[None, :, None, None] + 1.5 * a[None, None, :, None] + torch.rand(3, 1, 1, c) * 6)
            p.copy_(0.5 * value)
    x = torch.rand(500, 3) * 1.6 - 0.8
    before = field.encoder(field.normalize(x)).detach()
    assert not field.on_train_step(5)
    assert field.on_train_step(10) and field.encoder.resolution == resolution_at(field.config, 10) == 32
    after = field.encoder(field.normalize(x)).detach()
    assert (after - before).abs().max() < 0.01 * before.abs().max()
    assert field.on_train_step(25) and field.encoder.resolution == 64


def test_tensorf_lookups_match_grid_sample():
    from radistill.fields.tensorf import line_lookup, plane_lookup

    planes = torch.randn(3, 9, 9, 5)
    lines = torch.randn(3, 9, 5)
    uv = torch.rand(3, 50, 2)
    w = torch.rand(3, 50)
    got = plane_lookup(planes, uv)
    # grid_sample addresses (x, y) = (width, height): the plane's second index is x
    grid = torch.stack([uv[..., 1], uv[..., 0]], -1) * 2 - 1
    want = torch.nn.functional.grid_sample(planes.permute(0, 3, 1, 2), grid[:, :, None, :], align_corners=True)
    assert torch.allclose(got, want[..., 0].permute(0, 2, 1), atol=1e-5)
    got_l = line_lookup(lines, w)
    grid_l = torch.stack([torch.zeros_like(w), w * 2 - 1], -1)
    want_l = torch.nn.functional.grid_sample(lines.permute(0, 2, 1)[..., None], grid_l[:, :, None, :], align_corners=True)
    assert torch.allclose(got_l, want_l[..., 0].permute(0, 2, 1), atol=1e-5)


def test_weighted_rows_gradients_match_autograd_for_narrow_and_wide_tables():
    from radistill.fields.gather import weighted_rows

    for channels in (2, 24):
        table = torch.randn(30, channels, requires_grad=True)
        rows = torch.randint(0, 30, (100, 4))
        w = torch.rand(100, 4)
        up = torch.randn(100, channels)
        (weighted_rows(table, rows, w) * up).sum().backward()
        ref = table.detach().clone().requires_grad_()
        ((ref[rows] * w[..., None]).sum(1) * up).sum().backward()
        assert torch.allclose(table.grad, ref.grad, atol=1e-5)


def test_weighted_rows_gradient_in_double_precision_and_for_no_rows():
    """Both backward paths on CPU (per-column bincounts for narrow tables, the sparse product for
    wide ones): float64 sums stay in float64 (5,000 points into 12 rows: summed in float32 they
    were off by ~1e-5), and a zero gradient (not an error) when a batch has no point."""
    from radistill.fields.gather import weighted_rows

    for channels in (2, 20):
        table = torch.randn(12, channels, dtype=torch.float64, requires_grad=True)
        rows = torch.randint(0, 12, (5000, 2))  # every row repeats hundreds of times
        w = torch.rand(5000, 2, dtype=torch.float64)
        up = torch.randn(5000, channels, dtype=torch.float64)
        (weighted_rows(table, rows, w) * up).sum().backward()
        want = torch.zeros_like(table).index_add_(0, rows.reshape(-1), (w[..., None] * up[:, None]).reshape(-1, channels))
        assert torch.allclose(table.grad, want, rtol=0, atol=1e-10)
        assert torch.autograd.gradcheck(lambda t: weighted_rows(t, rows[:50], w[:50]), (table,))
        table.grad = None
        weighted_rows(table, rows[:0], w[:0]).sum().backward()
        assert torch.equal(table.grad, torch.zeros_like(table))


def test_weighted_rows_half_table_gradient_is_half_and_summed_in_float():
    """An fp16 table gets an fp16 gradient, summed in fp32: 4,000 points on one row summed in
    halves would lose the small contributions once the sum passes 2^11 * their size."""
    from radistill.fields.gather import weighted_rows

    table = torch.zeros(4, 2, dtype=torch.float16, requires_grad=True)
    rows = torch.zeros(4000, 1, dtype=torch.long)
    w = torch.ones(4000, 1)
    up = torch.full((4000, 2), 0.25, dtype=torch.float16)
    (weighted_rows(table, rows, w) * up).sum().backward()
    assert table.grad.dtype == torch.float16
    assert torch.equal(table.grad[0], torch.tensor([1000.0, 1000.0], dtype=torch.float16))
    assert torch.equal(table.grad[1:], torch.zeros(3, 2, dtype=torch.float16))


def test_cp_product_of_three_matches_prod_in_values_and_gradients():
    from radistill.fields.tensorf import product_of_three

    factors = torch.randn(3, 40, 7, dtype=torch.float64)
    factors[1, :5] = 0.0  # prod's backward treats zeros apart; the product rule needs no special case
    up = torch.randn(40, 7, dtype=torch.float64)
    mine = factors.clone().requires_grad_()
    ref = factors.clone().requires_grad_()
    (product_of_three(mine) * up).sum().backward()
    (ref.prod(0) * up).sum().backward()
    assert torch.equal(product_of_three(factors), factors.prod(0))
    assert torch.allclose(mine.grad, ref.grad, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(product_of_three, (factors.clone().requires_grad_(),))


@pytest.mark.parametrize("kind", NEURAL_KINDS)
def test_an_empty_batch_of_points_is_answered(kind):
    """A distillation step can select no point at all (every ray misses the occupied cells)."""
    field = create_field(kind, torch.tensor([[-1.0] * 3, [1.0] * 3]))
    out = field.query(torch.zeros(0, 3), torch.zeros(0, 3))
    assert out.sigma.shape == (0,) and out.rgb.shape == (0, 3) and out.junction.shape == (0, 16)
    assert field.density(torch.zeros(0, 3)).shape == (0,)


@pytest.mark.parametrize("kind", ["tensorf-vm", "tensorf-cp"])
def test_tensorf_state_of_other_sizes_loads_into_a_default_field(kind):
    """A state saved with other component counts and resolution (a nerfstudio run made before
    the kind's default sizes changed keeps only the options it was given) loads into a field
    built with the defaults, which then answers exactly as the saved one."""
    saved = create_field(kind, AABB, density_components=4, app_components=6, resolution=12, final_resolution=12)
    with torch.no_grad():
        for p in saved.parameters():
            p.add_(0.1 * torch.randn_like(p))
    field = create_field(kind, AABB, resolution=8)
    state = saved.state_dict()
    field.prepare_state(state)
    field.load_state_dict(state)
    assert (field.config.density_components, field.config.app_components, field.encoder.resolution) == (4, 6, 12)
    x, d = torch.rand(64, 3) * 2 - 1, torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    want, got = saved.query(x, d), field.query(x, d)
    assert torch.equal(got.sigma, want.sigma) and torch.equal(got.rgb, want.rgb)
