"""Time the main job end to end: ``radistill demo`` with its defaults.

Run:
    python benchmarks/demo.py

Writes benchmarks/results/demo_cpu.json and .md with the figures the demo printed: the total time
and the hashgrid trained from photos (``demo``), and each conversion
(``demo/convert/builtin/<from>-><kind>``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import write_results  # noqa: E402

from radistill.demo import run_demo  # noqa: E402


def main() -> None:
    common.GIT_AT_START = common.git_commit()
    t0 = time.perf_counter()
    summary = run_demo(Path("outputs/bench_demo"))
    seconds = time.perf_counter() - t0
    row = summary["rows"][0]
    records = [{
        "id": "demo",
        "params": {"scene": "builtin", "res": summary["resolution"], "holdout": "8 test views", "teacher": "hashgrid",
                   "train_budget_s": 120},
        "metrics": {"seconds": round(seconds, 1), "psnr": round(row["psnr"], 3), "ssim": round(row["ssim"], 4),
                    "steps": row["steps"], "samples_per_s": round(row["samples_per_s"])},
    }]
    for row in summary["rows"][1:]:  # the demo's conversions (of its hashgrid, and of the Gaussians back)
        records.append({
            "id": f"demo/convert/builtin/{row['from']}->{row['kind']}",
            "params": {"scene": "builtin", "res": summary["resolution"], "holdout": "8 test views",
                       "psnr_teacher_on": "4 random teacher poses", "budget_s": 40},
            "metrics": {"seconds": round(row["seconds"], 1), "psnr": round(row["psnr"], 3),
                        "psnr_teacher": round(row["psnr_vs_teacher"], 3), "ssim": round(row["ssim"], 4),
                        "steps": row["steps"]},
        })
    cols = [("seconds", "seconds"), ("PSNR", "psnr"), ("PSNR vs teacher", "psnr_teacher"), ("SSIM", "ssim"),
            ("steps", "steps"), ("samples/s", "samples_per_s")]
    print(f"wrote {write_results('demo_cpu', 'demo', records, cols)}")


if __name__ == "__main__":
    main()
