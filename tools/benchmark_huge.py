"""Peak memory of `nnUNetv2_flare_predict` on a huge scan (default 512 x 512 x 1500 int16, 0.78 x 0.78 x 0.8 mm,
with -2048 padding outside the scan circle so that the padding clamp runs too). Target: <= 4 GB (issue 20; printed
in GiB and GB). Figures: docs/performance.md, "Memory".

    python tools/benchmark_huge.py                      # tiny random networks (memory is the volume's arrays)
    python tools/benchmark_huge.py --paper              # the paper's network sizes (random weights; slower)
    python tools/benchmark_huge.py --slices 600 --flip  # a stored-flipped scan: exercises the reorientation copy
    python tools/benchmark_huge.py --paper --backend torch --threads 1 --work /data/tmp   # runtime, threads, where
    python tools/benchmark_huge.py --paper --windows tiles fitted fitted:1e6   # windows, one after the other

The command runs in its own process; its peak resident memory is that process's own (measure.py). With OpenVINO a first,
unmeasured run on a 16-slice scan converts the networks (once per checkpoint, cached), so the measured run is what
every later prediction does. Random weights make the locator's box random (often the whole volume), which is the worst
case for memory. The random organ checkpoint records the window range of any-window training (6 patches' voxels), so
`--windows fitted` runs the windows fitted to the crop that such a model gets.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchmark_cascade import window_choice, window_settings
from measure import run_measured

TARGET_GB = 4.0  # issue 20: peak memory at 512 x 512 x 1500 on either runtime (GB = 1e9 bytes)


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


def window_arguments(window: str) -> list[str]:
    settings = window_settings(window)
    return ["--window", settings["window"]] + (["--window_voxels", str(settings["window_voxels"])]
                                               if settings["window_voxels"] else [])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", type=int, default=1500)
    p.add_argument("--paper", action="store_true", help="the paper's network sizes instead of tiny ones")
    p.add_argument("--flip", action="store_true", help="store the scan in RAS (needs the reorientation copy)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the prediction (default: all cores)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino"])
    p.add_argument("--windows", nargs="+", default=["tiles"], type=window_choice,
                   help="the organ network's windows (--window of the predictor; fitted:N adds --window_voxels N), "
                        "one measured run each")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for the temporary files (made if missing; default: the system's temporary folder)")
    args = p.parse_args()
    from random_models import write_random_cascade

    from nnunetv2_flare.window_shapes import WindowRange

    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)  # TemporaryDirectory needs its parent to exist
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        patch = (96, 96, 96)
        locator, organs = write_random_cascade(work / "results", tiny=not args.paper,
                                               organ_window_range=WindowRange.around(patch, 16, 6))
        predict = [sys.executable, "-m", "nnunetv2_flare.inference.cli.predict", "-m1", str(locator), "-m2",
                   str(organs), "--disable_progress_bar", "--backend", args.backend] + \
            (["--threads", str(args.threads)] if args.threads else [])
        if args.backend != "torch":  # convert and cache the networks first, unmeasured
            small = work / "small" / "small_0000.mha"
            small.parent.mkdir()
            write_huge(small, 16, args.flip)
            code, wall, _, _ = run_measured(predict + ["-i", str(small), "-o", str(work / "small_out")],
                                         work / "small.log")
            if code != 0:
                print((work / "small.log").read_text())
                sys.exit(code)
            print(f"converted the networks (a first prediction of 16 slices) in {wall:.0f} s", flush=True)
        case = work / "in" / "huge_0000.mha"
        case.parent.mkdir()
        t = time.time()
        write_huge(case, args.slices, args.flip)
        print(f"wrote {case.stat().st_size / 2**20:.0f} MiB input in {time.time() - t:.0f} s", flush=True)
        for window in args.windows:
            report = work / f"report_{window}.json"
            code, wall, cpu, peak_bytes = run_measured(
                predict + ["-i", str(case), "-o", str(work / f"out_{window}"), "--report", str(report)]
                + window_arguments(window), work / "huge.log")
            if code != 0:
                print((work / "huge.log").read_text())
                sys.exit(code)
            entry = json.loads(report.read_text())["cases"]["huge"]
            row = {"size_xyz": [512, 512, args.slices], "networks": "paper" if args.paper else "tiny",
                   "backend": args.backend, "window": window, "flipped": args.flip, "wall_s": round(wall, 1),
                   "cpu_s": round(cpu, 1), "peak_rss_gib": round(peak_bytes / 2**30, 2),
                   "peak_rss_gb": round(peak_bytes / 1e9, 2), "target_gb": TARGET_GB,
                   "ok": peak_bytes <= TARGET_GB * 1e9, "n_patches": entry["n_patches"],
                   "organ_windows": entry["organ_windows"], "crop_size_xyz": entry["crop_box"]["size_xyz"],
                   "timings_s": entry["timings_s"]}
            print(json.dumps(row, indent=1), flush=True)


if __name__ == "__main__":
    main()
