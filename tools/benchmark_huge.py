"""Peak memory of `nnUNetv2_flare_predict` on a huge scan (default 512 x 512 x 1500 int16, 0.78 x 0.78 x 0.8 mm,
with -2048 padding outside the scan circle so that the padding clamp runs too). Target: <= 8 GB.

    python tools/benchmark_huge.py                      # tiny random networks (memory is the volume's arrays)
    python tools/benchmark_huge.py --paper              # the paper's network sizes (random weights; slower)
    python tools/benchmark_huge.py --slices 600 --flip  # a stored-flipped scan: exercises the reorientation copy

The command runs in its own process; its peak resident memory is that child's ru_maxrss. Random weights make the
locator's box random (often the whole volume), which is the worst case for memory.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_huge(path: Path, slices: int, flip: bool) -> None:
    import SimpleITK as sitk
    y, x = np.mgrid[-1:1:512j, -1:1:512j]
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 <= 1
    circle = x ** 2 + y ** 2 <= 1
    organ = ((x + 0.35) / 0.35) ** 2 + ((y + 0.1) / 0.3) ** 2 <= 1
    volume = np.empty((slices, 512, 512), np.int16)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 15, (8, 512, 512)).astype(np.int16)
    for z in range(slices):
        s = volume[z]
        s[:] = -1000
        s[body] = 30
        s[organ & body] = 60 + int(20 * np.sin(z / 40))
        s += noise[z % 8]
        s[~circle] = -2048
    image = sitk.GetImageFromArray(volume)
    del volume
    image.SetSpacing((0.78, 0.78, 0.8))
    if flip:
        image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(path), useCompression=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", type=int, default=1500)
    p.add_argument("--paper", action="store_true", help="the paper's network sizes instead of tiny ones")
    p.add_argument("--flip", action="store_true", help="store the scan in RAS (needs the reorientation copy)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--work", type=Path, default=None)
    args = p.parse_args()
    from nnunetv2_flare.inference.random_models import write_random_cascade

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        locator, organs = write_random_cascade(work / "results", tiny=not args.paper)
        case = work / "in" / "huge_0000.mha"
        case.parent.mkdir()
        t = time.time()
        write_huge(case, args.slices, args.flip)
        print(f"wrote {case.stat().st_size / 2**20:.0f} MiB input in {time.time() - t:.0f} s", flush=True)
        cmd = [sys.executable, "-m", "nnunetv2_flare.inference.predict_cli", "-i", str(case), "-o",
               str(work / "out"), "-m1", str(locator), "-m2", str(organs), "--report", str(work / "report.json"),
               "--disable_progress_bar"] + (["--threads", str(args.threads)] if args.threads else [])
        t = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
        if proc.returncode != 0:
            print(proc.stderr)
            sys.exit(proc.returncode)
        entry = json.loads((work / "report.json").read_text())["cases"]["huge"]
        row = {"size_xyz": [512, 512, args.slices], "networks": "paper" if args.paper else "tiny",
               "flipped": args.flip, "wall_s": round(wall, 1), "peak_rss_gib": round(peak_gib, 2),
               "target_gib": 8.0, "ok": peak_gib <= 8.0, "n_patches": entry["n_patches"],
               "crop_size_xyz": entry["crop_box"]["size_xyz"], "timings_s": entry["timings_s"]}
        print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
