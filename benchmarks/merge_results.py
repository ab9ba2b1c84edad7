"""Merge results written on another machine (a GPU machine's RESULTS_DIR) into benchmarks/results.

Run:
    python benchmarks/merge_results.py kernels /tmp/gpu/kernels_cuda.json [--drop-prefix kernel/]

Records are merged by id (the new file's win; ``--drop-prefix`` drops the old records with that
id prefix that the new file no longer has, e.g. rows of a renamed launch setting). The document's
date, commit, command and machine are the new file's; each record keeps the commit it ran.
The Markdown table is rewritten with the columns of ``benchmarks/<script>.py`` (``COLUMNS``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", help="the benchmark script that wrote the file (its COLUMNS make the table)")
    parser.add_argument("new", type=Path, help="the results JSON to merge in")
    parser.add_argument("--drop-prefix", default=None)
    args = parser.parse_args()
    module = importlib.import_module(args.script)
    doc = json.loads(args.new.read_text())
    for r in doc["records"]:
        r.setdefault("git", doc["git"])
    target = common.RESULTS / args.new.name
    new_ids = {r["id"] for r in doc["records"]}
    old = json.loads(target.read_text())["records"] if target.exists() else []
    kept = [r for r in old if r["id"] not in new_ids
            and not (args.drop_prefix and r["id"].startswith(args.drop_prefix))]
    doc["records"] = kept + doc["records"]
    if hasattr(module, "add_speedups"):
        module.add_speedups(doc["records"])
    path = common.write_doc(args.new.stem, doc, module.COLUMNS)
    print(f"merged {len(new_ids)} records into {path} ({len(doc['records'])} in all)")


if __name__ == "__main__":
    main()
