"""Helpers shared by the benchmark scripts: the record format of ../shared/BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from radistill.host_memory import reuse_large_buffers

reuse_large_buffers()  # as the radistill command does: the figures are the command's

RESULTS = Path(__file__).resolve().parent / "results"
# ../shared/data beside the checkout; RADISTILL_DATA points elsewhere (a GPU machine gets a copy)
DATA = Path(os.environ.get("RADISTILL_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def machine() -> dict:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        return {"device": "cuda", "name": torch.cuda.get_device_name(0), "cores": os.cpu_count(), "torch": torch.__version__}
    return {"device": "cpu", "name": name, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def git_commit() -> str:
    """The commit of this checkout (RADISTILL_GIT where the copy has no .git, as on a GPU machine)."""
    if os.environ.get("RADISTILL_GIT"):
        return os.environ["RADISTILL_GIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


GIT_AT_START: str | None = None  # set by each script when it starts, so a record names the code it ran


def write_results(name: str, benchmark: str, records: list[dict], columns: list[tuple[str, str]],
                  merge: bool = True) -> Path:
    """Write ``results/<name>.json`` (merging records by id) and ``results/<name>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    old = json.loads(path.read_text())["records"] if merge and path.exists() else []
    commit = GIT_AT_START or git_commit()
    for r in records:
        r.setdefault("git", commit)  # merged files hold records of several runs
    fresh = {r["id"]: r for r in records}
    old_ids = {r["id"] for r in old}
    # a rerun record takes its old row's place, so a partial rerun leaves the table's order alone
    merged = [fresh.get(r["id"], r) for r in old] + [r for r in records if r["id"] not in old_ids]
    doc = {
        "benchmark": benchmark,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git": GIT_AT_START or git_commit(),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix().split("/main/")[-1], *sys.argv[1:]]),
        "machine": machine(),
        "records": merged,
    }
    return write_doc(name, doc, columns)


def write_doc(name: str, doc: dict, columns: list[tuple[str, str]]) -> Path:
    """Write a results document as ``results/<name>.json`` and its table as ``results/<name>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"# {doc['benchmark']}", "", f"{doc['date']}, git {doc['git'][:10]}, {doc['machine']['name']} "
             f"({doc['machine']['device']}, {doc['machine']['cores']} cores), torch {doc['machine']['torch']}", "",
             "| id | " + " | ".join(c[0] for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for r in doc["records"]:
        vals = []
        for _, key in columns:
            v = r["metrics"].get(key, r["params"].get(key, ""))
            vals.append(f"{v:.4g}" if isinstance(v, float) and abs(v) < 1e4 else f"{v:,.0f}" if isinstance(v, (int, float))
                        and not isinstance(v, bool) and abs(v) >= 1e4 else str(v))
        lines.append(f"| {r['id']} | " + " | ".join(vals) + " |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    return path


def forward_backward_seconds(run, inputs: list, device: str, repeats: int = 3) -> tuple[dict[str, float], object]:
    """Best wall time of ``run(*inputs)`` alone (``forward``) and followed by a backward pass
    through ``.rgb.sum()`` (``forward+backward``), over ``repeats`` runs after one warm-up (which
    also builds any lazily compiled kernels). Returns the times and the last output."""
    import math
    import time

    import torch

    times, out = {}, None
    for mode in ("forward", "forward+backward"):
        best = math.inf
        for _ in range(repeats + 1):
            args = [x.detach().requires_grad_(mode != "forward") for x in inputs]
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = run(*args)
            if mode != "forward":
                out.rgb.sum().backward()
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        times[mode] = best
    return times, out
