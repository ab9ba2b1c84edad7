"""3DGS PLY and .splat files: the reader on crafted files (built byte by byte, not by the writer),
the real donut scene, the graphdeco writer's exact layout and round trips, and every bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radistill.errors import RadistillError
from radistill.io.ply import (GaussianArrays, PlyError, PlyWarning, read_gaussian_ply, read_splat,
                              write_gaussian_ply, write_splat)

REQUIRED = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3"]
NP = {"float": "f4", "double": "f8", "uchar": "u1", "char": "i1", "short": "i2", "ushort": "u2",
      "int": "i4", "uint": "u4", "float32": "f4", "uint8": "u1"}
SH_C0 = 0.28209479177387814
FIELDS = ["means", "quats", "log_scales", "logit_opacities", "sh"]


def header(n, props, fmt="binary_little_endian", before=(), after=()):
    lines = ["ply", f"format {fmt} 1.0", "comment crafted by test_ply", *before, f"element vertex {n}"]
    lines += [f"property {t} {name}" for t, name in props] + list(after) + ["end_header"]
    return ("\n".join(lines) + "\n").encode()


def body(props, cols, order="<"):
    dtype = np.dtype({"names": [n for _, n in props], "formats": [order + NP[t] for t, _ in props]})
    rows = np.zeros(len(cols[props[0][1]]), dtype)
    for _, name in props:
        rows[name] = cols[name]
    return rows.tobytes()


def random_cols(n, rest=0, seed=0):
    rng = np.random.default_rng(seed)
    cols = {name: rng.normal(size=n).astype(np.float32) for name in REQUIRED}
    cols["rot_0"] += 3  # never a zero quaternion
    cols.update({f"f_rest_{i}": rng.normal(size=n).astype(np.float32) for i in range(rest)})
    return cols


def floats(names):
    return [("float", name) for name in names]


def write(tmp_path, data, name="g.ply"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_matches(g, cols):
    """g holds exactly the crafted columns (float32 values), with sh[:, 0] = f_dc."""
    def get(*names):
        return torch.tensor(np.stack([np.float32(cols[n]) for n in names], -1))

    assert torch.equal(g.means, get("x", "y", "z"))
    assert torch.equal(g.quats, get("rot_0", "rot_1", "rot_2", "rot_3"))
    assert torch.equal(g.log_scales, get("scale_0", "scale_1", "scale_2"))
    assert torch.equal(g.logit_opacities, get("opacity")[:, 0])
    assert torch.equal(g.sh[:, 0], get("f_dc_0", "f_dc_1", "f_dc_2"))
    assert all(getattr(g, f).dtype == torch.float32 for f in FIELDS)


def assert_same(a, b):
    for f in FIELDS:
        assert torch.equal(getattr(a, f), getattr(b, f)), f


# ----------------------------------------------------------------------------- the real file


def test_donut_matches_an_independent_read_and_round_trips(shared_data, tmp_path):
    path = shared_data / "splats" / "donut_fused.ply"
    data = path.read_bytes()
    start = data.index(b"end_header\n") + len(b"end_header\n")
    raw = np.frombuffer(data[start:], "<f4").reshape(45_624, 14)  # x y z f_dc opacity scale rot
    g = read_gaussian_ply(path)
    assert len(g) == 45_624 and g.sh_degree == 0 and g.sh.shape == (45_624, 1, 3)
    assert torch.equal(g.means, torch.from_numpy(raw[:, 0:3].copy()))
    assert torch.equal(g.sh[:, 0], torch.from_numpy(raw[:, 3:6].copy()))
    assert torch.equal(g.logit_opacities, torch.from_numpy(raw[:, 6].copy()))
    assert torch.equal(g.log_scales, torch.from_numpy(raw[:, 7:10].copy()))
    assert torch.equal(g.quats, torch.from_numpy(raw[:, 10:14].copy()))
    out = write_gaussian_ply(tmp_path / "donut.ply", g)
    written = out.read_bytes()
    assert len(written) - written.index(b"end_header\n") - len(b"end_header\n") == 45_624 * 17 * 4  # + normals
    assert_same(read_gaussian_ply(out), g)


# ----------------------------------------------------------------------------- layouts the reader accepts


def test_degree3_with_normals_maps_channel_major_f_rest(tmp_path):
    n = 7
    cols = random_cols(n, rest=45)
    cols.update(nx=np.ones(n), ny=np.ones(n), nz=np.ones(n))
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *[f"f_rest_{i}" for i in range(45)],
             "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    g = read_gaussian_ply(write(tmp_path, header(n, floats(names)) + body(floats(names), cols)))
    assert g.sh_degree == 3 and g.sh.shape == (n, 16, 3)
    assert_matches(g, cols)
    for c in range(3):  # f_rest_{15c + j} is coefficient 1 + j of channel c
        for j in range(15):
            assert torch.equal(g.sh[:, 1 + j, c], torch.from_numpy(cols[f"f_rest_{15 * c + j}"]))


@pytest.mark.parametrize("degree", [1, 2])
def test_lower_sh_degrees(tmp_path, degree):
    rest = 3 * ((degree + 1) ** 2 - 1)
    cols = random_cols(5, rest=rest)
    names = REQUIRED + [f"f_rest_{i}" for i in range(rest)]
    g = read_gaussian_ply(write(tmp_path, header(5, floats(names)) + body(floats(names), cols)))
    m = rest // 3
    assert g.sh_degree == degree
    assert torch.equal(g.sh[:, m, 2], torch.from_numpy(cols[f"f_rest_{3 * m - 1}"]))  # last blue
    assert torch.equal(g.sh[:, 1, 1], torch.from_numpy(cols[f"f_rest_{m}"]))  # first green


def test_big_endian(tmp_path):
    cols = random_cols(9, rest=9)
    props = floats(REQUIRED + [f"f_rest_{i}" for i in range(9)])
    big = read_gaussian_ply(write(tmp_path, header(9, props, "binary_big_endian") + body(props, cols, ">")))
    little = read_gaussian_ply(write(tmp_path, header(9, props) + body(props, cols), "le.ply"))
    assert_matches(big, cols)
    assert_same(big, little)


def test_mixed_scalar_types_are_read_by_value(tmp_path):
    cols = random_cols(4)
    cols["x"] = cols["x"].astype(np.float64) + 1e-9  # double, rounded to float32
    cols["opacity"] = np.array([0, 7, 200, 255], np.uint8)
    cols["rot_0"] = np.array([-3, 1, 2, 120], np.int8)
    cols["scale_0"] = np.array([-30000, 0, 5, 30000], np.int16)
    types = {"x": "double", "opacity": "uchar", "rot_0": "char", "scale_0": "short", "y": "float32"}
    props = [(types.get(name, "float"), name) for name in REQUIRED]
    g = read_gaussian_ply(write(tmp_path, header(4, props) + body(props, cols)))
    assert_matches(g, cols)
    assert g.logit_opacities.tolist() == [0.0, 7.0, 200.0, 255.0]


def test_shuffled_order_and_extra_properties_are_ignored(tmp_path):
    cols = random_cols(6, rest=24)
    cols.update(red=np.full(6, 200), custom=np.arange(6), nx=np.zeros(6))
    names = REQUIRED + [f"f_rest_{i}" for i in range(24)]
    props = [("uchar", "red"), ("double", "custom"), ("float", "nx")] + floats(names)
    props = [props[i] for i in np.random.default_rng(1).permutation(len(props))]
    g = read_gaussian_ply(write(tmp_path, header(6, props) + body(props, cols)))
    ref = read_gaussian_ply(write(tmp_path, header(6, floats(names)) + body(floats(names), cols), "ref.ply"))
    assert_matches(g, cols)
    assert_same(g, ref)


def test_ascii(tmp_path):
    cols = random_cols(3)
    lines = [" ".join(repr(float(cols[n][i])) for n in REQUIRED) for i in range(3)]
    data = header(3, floats(REQUIRED), "ascii", before=["element camera 1", "property int id"])
    g = read_gaussian_ply(write(tmp_path, data + b"17\n" + "\n".join(lines).encode() + b"\n3 0 1 2\n"))
    assert_matches(g, cols)


def test_elements_around_vertex(tmp_path):
    cols = random_cols(4)
    props = floats(REQUIRED)
    before = ["element camera 2", "property float fx", "property uchar id"]  # fixed size: skipped
    after = ["element face 1", "property list uchar int vertex_indices"]  # after vertex: ignored
    face = np.array([3], "u1").tobytes() + np.array([0, 1, 2], "<i4").tobytes()
    data = header(4, props, before=before) + b"\0" * 10 + body(props, cols)
    data = data.replace(b"end_header", "\n".join(after).encode() + b"\nend_header") + face
    assert_matches(read_gaussian_ply(write(tmp_path, data)), cols)
    listed = header(4, props, before=["element face 1", "property list uchar int vertex_indices"])
    with pytest.raises(PlyError, match="element 'face' before 'vertex' has list properties"):
        read_gaussian_ply(write(tmp_path, listed + face + body(props, cols), "list_first.ply"))


# ----------------------------------------------------------------------------- bad input


def good(n=3):
    return header(n, floats(REQUIRED)) + body(floats(REQUIRED), random_cols(n))


BAD = {
    "magic": (b"PK\x03\x04" + good()[3:], ["not a PLY file"]),
    "format": (good().replace(b"binary_little_endian", b"binary_middle_endian"),
               ["unknown PLY format", "binary_middle_endian"]),
    "end_header": (good().split(b"end_header")[0], ["no 'end_header'"]),
    "vertex": (good().replace(b"element vertex", b"element points"), ["no 'element vertex'", "points"]),
    "missing": (good().replace(b"property float opacity\n", b"").replace(b"float rot_3", b"float quat_3"),
                ["lacks required properties", "'opacity'", "'rot_3'"]),
    "f_rest count": (header(3, floats(REQUIRED + [f"f_rest_{i}" for i in range(10)]))
                     + body(floats(REQUIRED + [f"f_rest_{i}" for i in range(10)]), random_cols(3, rest=10)),
                     ["10 f_rest_* properties", "[0, 9, 24, 45]"]),
    "f_rest gap": (header(3, floats(REQUIRED + [f"f_rest_{i}" for i in range(1, 10)])) + b"\0" * 276,
                   ["not numbered 0..8", "missing [0]"]),
    "truncated": (good()[:-5], ["truncated", "168 bytes", "163 are present"]),
    "type": (good().replace(b"property float x", b"property float16 x"), ["unknown property type 'float16'"]),
    "list in vertex": (good().replace(b"property float x\n", b"property list uchar float x\n"),
                       ["list properties ['x']"]),
    "duplicate": (good().replace(b"float y\n", b"float x\n"), ["declares a property twice", "'x'"]),
    "empty": (good(0), ["no Gaussians"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_a_clear_error(tmp_path, case):
    data, fragments = BAD[case]
    path = write(tmp_path, data, f"{case.replace(' ', '_')}.ply")
    with pytest.raises(PlyError) as info:
        read_gaussian_ply(path)
    assert isinstance(info.value, RadistillError)
    for fragment in [str(path), *fragments]:
        assert fragment in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(PlyError, match="no such PLY file"):
        read_gaussian_ply(tmp_path / "nope.ply")
    with pytest.raises(PlyError, match="it is a folder"):
        read_gaussian_ply(tmp_path)


def test_nan_rows_and_zero_quaternions_are_dropped_with_a_warning(tmp_path):
    cols = random_cols(10, rest=9)
    cols["x"][1] = np.nan
    cols["f_rest_8"][4] = np.inf
    for i in range(4):
        cols[f"rot_{i}"][7] = 0.0
    props = floats(REQUIRED + [f"f_rest_{i}" for i in range(9)])
    with pytest.warns(PlyWarning, match=r"dropped 3 of 10 Gaussians \(2 with NaN/inf values, 1 with a zero-norm"):
        g = read_gaussian_ply(write(tmp_path, header(10, props) + body(props, cols)))
    keep = [0, 2, 3, 5, 6, 8, 9]
    assert_matches(g, {k: v[keep] for k, v in cols.items()})
    for i in range(4):
        cols[f"rot_{i}"][:] = 0.0
    with pytest.raises(PlyError, match="all 10 Gaussians are unusable"):
        read_gaussian_ply(write(tmp_path, header(10, props) + body(props, cols), "all_bad.ply"))


# ----------------------------------------------------------------------------- writers


def random_arrays(n=50, degree=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    def r(*shape):
        return torch.randn(*shape, generator=gen)

    return GaussianArrays(means=r(n, 3), quats=r(n, 4) + torch.tensor([2.0, 0, 0, 0]), log_scales=r(n, 3) - 3,
                          logit_opacities=2 * r(n), sh=r(n, (degree + 1) ** 2, 3))


def test_writer_uses_the_graphdeco_layout_and_round_trips(tmp_path):
    g = random_arrays(degree=3)
    path = write_gaussian_ply(tmp_path / "out" / "g.ply", g)
    data = path.read_bytes()
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *[f"f_rest_{i}" for i in range(45)],
             "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    expected_header = ("ply\nformat binary_little_endian 1.0\nelement vertex 50\n"
                       + "".join(f"property float {n}\n" for n in names) + "end_header\n").encode()
    assert data.startswith(expected_header) and len(data) == len(expected_header) + 50 * 62 * 4
    raw = np.frombuffer(data[len(expected_header):], "<f4").reshape(50, 62)
    assert not raw[:, 3:6].any()  # normals
    assert np.array_equal(raw[:, 9 + 15 + 4], g.sh[:, 5, 1].numpy())  # f_rest_19: green coefficient 5
    assert_same(read_gaussian_ply(path), g)
    assert [p.name for p in path.parent.iterdir()] == ["g.ply"]  # atomic: no temporary left over


def test_writer_rejects_malformed_arrays(tmp_path):
    g = random_arrays(degree=1)
    g.sh = g.sh[:, :3]
    with pytest.raises(PlyError, match=r"'sh' has shape \[50, 3, 3\]"):
        write_gaussian_ply(tmp_path / "g.ply", g)
    g = random_arrays(degree=0)
    g.means = g.means.double()
    with pytest.raises(PlyError, match="'means' is torch.float64"):
        write_gaussian_ply(tmp_path / "g.ply", g)


def test_splat_records_order_and_round_trip(tmp_path):
    g = random_arrays(n=200, degree=2)
    path = write_splat(tmp_path / "g.splat", g)
    data = path.read_bytes()
    assert len(data) == 32 * 200
    rec = np.frombuffer(data, np.dtype([("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)]))
    order = np.argsort(-(g.log_scales.double().sum(1).exp() * torch.sigmoid(g.logit_opacities.double())).numpy())
    assert np.array_equal(rec["pos"], g.means.numpy()[order])  # biggest, most opaque first
    back = read_splat(path)
    assert len(back) == 200 and back.sh_degree == 0
    s = g.subset(torch.from_numpy(order))
    assert torch.equal(back.means, s.means)
    torch.testing.assert_close(back.log_scales, s.log_scales, atol=1e-5, rtol=0)
    def colour(a):
        return (0.5 + SH_C0 * a.sh[:, 0]).clamp(0, 1)

    assert (colour(back) - colour(s)).abs().max() <= 0.5 / 255 + 1e-6
    assert (torch.sigmoid(back.logit_opacities) - torch.sigmoid(s.logit_opacities)).abs().max() <= 0.5 / 255 + 1e-6
    unit = torch.nn.functional.normalize(s.quats, dim=1)
    assert (back.quats - unit).abs().max() <= 1 / 128  # rounding, and 1.0 -> byte 255 -> 127/128


def test_splat_errors(tmp_path):
    with pytest.raises(PlyError, match="not a multiple of 32"):
        read_splat(write(tmp_path, b"\0" * 33, "bad.splat"))
    g = random_arrays(n=4, degree=0)
    g.quats[2] = 0
    with pytest.raises(PlyError, match="1 with a zero-norm quaternion"):
        write_splat(tmp_path / "g.splat", g)
