"""Time the phantom generator on full-size (512 x 512) cases; the target is a 512 x 512 x 200 case in a few seconds.

    python tools/benchmark_phantoms.py [-n 6] [--seed 0] [--write DIR]

Prints per case the grid, the generation time (arrays, without writing; wall clock and this process's CPU time,
which a busy shared machine inflates less) and the time scaled to 512 x 512 x 200
voxels; with --write also the time to write the compressed NIfTI pair.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from nnunetv2_flare.atomic_io import write_image_atomic
from nnunetv2_flare.phantoms import make_phantom_arrays

REFERENCE_VOXELS = 512 * 512 * 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=6, help="number of cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="also time writing the .nii.gz files")
    args = parser.parse_args()
    make_phantom_arrays(args.seed, "tiny")  # warm-up: imports, first allocations
    per_reference = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.n):
            start, cpu_start = time.perf_counter(), time.process_time()
            phantom = make_phantom_arrays(args.seed + i)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            scaled = seconds * REFERENCE_VOXELS / phantom.image.size
            per_reference.append(scaled)
            line = (f"seed {args.seed + i}: {phantom.info['fov']:<21} {phantom.image.shape[::-1]} voxels, "
                    f"{seconds:5.2f} s wall, {cpu:5.2f} s CPU ({scaled:4.2f} s wall per 512x512x200)")
            if args.write:
                start = time.perf_counter()
                image, label = phantom.to_sitk()
                write_image_atomic(image, Path(tmp) / "case_0000.nii.gz")
                write_image_atomic(label, Path(tmp) / "case.nii.gz")
                line += f", written in {time.perf_counter() - start:5.2f} s"
            print(line, flush=True)
    print(f"median {np.median(per_reference):.2f} s per 512x512x200 case")


if __name__ == "__main__":
    main()
