import json

import pytest

from radistill.demo import run_demo
from radistill.io.checkpoint import load_field


@pytest.mark.slow
def test_demo_trains_then_converts_to_every_other_neural_kind(tmp_path):
    summary = run_demo(tmp_path, seconds=6, resolution=24, convert_seconds=4)
    rows = {r["kind"]: r for r in summary["rows"]}
    assert list(rows) == ["hashgrid", "mlp", "tensorf-vm", "tensorf-cp"]
    assert rows["hashgrid"]["from"] == "photos" and rows["hashgrid"]["psnr_vs_teacher"] is None
    for kind in ("mlp", "tensorf-vm", "tensorf-cp"):
        row = rows[kind]
        assert row["from"] == "hashgrid" and row["steps"] > 0
        assert 5 < row["psnr_vs_teacher"] < 100 and 5 < row["psnr"] < 100
        assert load_field(tmp_path / f"convert_{kind}" / f"{kind}.safetensors").kind == kind
        assert (tmp_path / "renders" / kind).is_dir()
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == summary["rows"]
    assert (tmp_path / "turntable.gif").exists()
