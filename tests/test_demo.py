import json

import pytest

from radistill.demo import run_demo
from radistill.io.checkpoint import load_field


@pytest.mark.slow
def test_demo_trains_then_converts_to_every_other_kind_and_back_from_gaussians_and_mesh(tmp_path):
    # bounded by steps, not seconds: a busy machine must not leave the teacher untrained
    summary = run_demo(tmp_path, seconds=600, resolution=24, convert_seconds=300, steps=60, convert_steps=30)
    rows = {(r["from"], r["kind"]): r for r in summary["rows"]}
    assert list(rows) == [("photos", "hashgrid"), ("hashgrid", "mlp"), ("hashgrid", "tensorf-vm"),
                          ("hashgrid", "tensorf-cp"), ("hashgrid", "gaussians"), ("hashgrid", "mesh"),
                          ("gaussians", "hashgrid"), ("mesh", "hashgrid")]
    assert rows["photos", "hashgrid"]["psnr_vs_teacher"] is None and rows["photos", "hashgrid"]["steps"] == 60
    for (source, kind), row in list(rows.items())[1:]:
        assert row["steps"] == 30
        assert 5 < row["psnr_vs_teacher"] < 100 and 5 < row["psnr"] < 100
        out = tmp_path / (f"convert_{kind}" if source == "hashgrid" else f"convert_{source}_to_hashgrid")
        assert load_field(out / f"{kind}.safetensors").kind == kind
        assert (tmp_path / "renders" / f"{source}_to_{kind}").is_dir()
    assert (tmp_path / "scene.ply").exists()
    from radistill.io.mesh import load_mesh

    assert load_mesh(tmp_path / "scene.glb").textured
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == summary["rows"]
    assert (tmp_path / "turntable.gif").exists()
