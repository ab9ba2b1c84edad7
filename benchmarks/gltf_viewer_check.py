"""Does a .glb that radistill wrote look the same in a real glTF viewer?

three.js (from the npm registry, ``benchmarks/gltf_viewer/package.json``) loads the file with its
own GLTFLoader in headless Chromium, from a page served on localhost; the camera is set to
radistill's pinhole camera (same pose, focal lengths and principal point). The screenshot is
compared with radistill's own render of the same file from the same camera.

Run (needs ``chromium`` from Debian and ``npm``; installs three.js into
benchmarks/gltf_viewer/node_modules on first use):
    python benchmarks/gltf_viewer_check.py outputs/bench_train/lego_mesh.glb

Writes benchmarks/results/gltf_viewer.{json,md} and gltf_viewer_<stem>.png (viewer | radistill |
difference x4, one row per view). Exits 1 when a view's PSNR is under ``--min-psnr``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import math
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import RESULTS, write_results  # noqa: E402

from radistill.cameras import orbit_poses, pinhole_cameras  # noqa: E402
from radistill.io.mesh import load_mesh  # noqa: E402
from radistill.metrics import psnr  # noqa: E402

VIEWER = Path(__file__).resolve().parent / "gltf_viewer"


def ensure_three() -> Path:
    three = VIEWER / "node_modules" / "three"
    if not three.exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=VIEWER, check=True)
    return three


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    """A static file server on 127.0.0.1 (a free port), quiet."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def screenshot(url: str, width: int, height: int, out: Path, chromium: str) -> np.ndarray:
    """Headless Chromium (WebGL through SwiftShader) draws ``url``; returns the RGB screenshot."""
    cmd = [chromium, "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--force-device-scale-factor=1",
           f"--window-size={width},{height}", "--virtual-time-budget=30000", f"--screenshot={out}", url]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(out).convert("RGB"), dtype=np.float32) / 255.0
    return img[:height, :width]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("glb", type=Path)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--size", type=int, default=400, help="pixels per side")
    parser.add_argument("--min-psnr", type=float, default=30.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    common.GIT_AT_START = common.git_commit()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        sys.exit("needs Chromium: apt-get install chromium")
    three = ensure_three()
    mesh = load_mesh(args.glb)
    mesh.config.supersample = 4  # radistill's reference image, well anti-aliased
    aabb = mesh.aabb
    center = ((aabb[0] + aabb[1]) / 2).tolist()
    radius = 1.2 * float((aabb[1] - aabb[0]).norm())
    cams = pinhole_cameras(orbit_poses(args.views, radius, 30.0, tuple(center)), args.size, 40.0)
    bg = torch.ones(3)
    rows, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        shutil.copy(VIEWER / "index.html", site / "index.html")
        (site / "three").symlink_to(three)
        shutil.copy(args.glb, site / "model.glb")
        server, port = serve(site)
        try:
            for k in range(args.views):
                c2w = cams.c2w[k].reshape(-1).tolist()
                url = (f"http://127.0.0.1:{port}/index.html?w={args.size}&h={args.size}&fx={float(cams.fx[k])}"
                       f"&fy={float(cams.fy[k])}&cx={float(cams.cx[k])}&cy={float(cams.cy[k])}"
                       f"&c2w={','.join(f'{v:.9g}' for v in c2w)}&bg=1,1,1")
                shot = torch.from_numpy(screenshot(url, args.size, args.size, site / f"shot{k}.png", chromium))
                with torch.no_grad():
                    ours = mesh.render_image(cams, k, bg)["rgb"].clamp(0, 1)
                value = psnr(shot, ours)
                covered = (ours - 1).abs().amax(-1) > 1e-3
                print(f"view {k}: viewer vs radistill {value:.2f} dB over the image "
                      f"({int(covered.sum())} object pixels)", flush=True)
                records.append({"id": f"gltf_viewer/{args.glb.stem}/view{k}",
                                "params": {"viewer": "three.js 0.187.0 GLTFLoader, headless Chromium (SwiftShader)",
                                           "size": f"{args.size}x{args.size}", "file": args.glb.name},
                                "metrics": {"psnr": round(value, 3), "object_pixels": int(covered.sum())}})
                diff = ((shot - ours).abs() * 4).clamp(0, 1)
                rows.append(torch.cat([shot, ours, diff], 1))
        finally:
            server.shutdown()
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        strip = (torch.cat(rows, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(strip).save(RESULTS / f"gltf_viewer_{args.glb.stem}.png")
        write_results("gltf_viewer", "A radistill .glb in a real glTF viewer (three.js) vs radistill's own render",
                      records, [("PSNR dB", "psnr"), ("object pixels", "object_pixels"), ("viewer", "viewer")])
    worst = min(r["metrics"]["psnr"] for r in records)
    if not math.isfinite(worst) or worst < args.min_psnr:
        sys.exit(f"a view differs: {worst:.2f} dB < {args.min_psnr} dB")


if __name__ == "__main__":
    main()
