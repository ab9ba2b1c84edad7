"""Time the main job end to end: ``radistill demo`` with its defaults.

Run:
    python benchmarks/demo.py

Writes benchmarks/results/demo_cpu.json and .md with the figures the demo printed.
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
    record = {
        "id": "demo",
        "params": {"scene": "builtin", "res": summary["resolution"], "holdout": "8 test views", "teacher": "hashgrid",
                   "train_budget_s": 120},
        "metrics": {"seconds": round(seconds, 1), "psnr": round(row["psnr"], 3), "ssim": round(row["ssim"], 4),
                    "steps": row["steps"], "samples_per_s": round(row["samples_per_s"])},
    }
    cols = [("seconds", "seconds"), ("PSNR", "psnr"), ("SSIM", "ssim"), ("steps", "steps"), ("samples/s", "samples_per_s")]
    print(f"wrote {write_results('demo_cpu', 'demo', [record], cols)}")


if __name__ == "__main__":
    main()
