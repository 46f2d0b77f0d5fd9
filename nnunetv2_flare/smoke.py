"""`nnUNetv2_flare_smoke`: build both networks with random weights and push a generated CT through them.

A quick check that an installation works (torch, the networks, the CPU threads); it says nothing about accuracy.
"""
from __future__ import annotations

import sys
import time
from typing import Sequence

import numpy as np
import torch

from nnunetv2_flare.cli_errors import FlareArgumentParser, UsageError, run_command
from nnunetv2_flare.labels import NUM_CLASSES
from nnunetv2_flare.networks import FlareLocator, FlareOrganNet


def run_smoke(threads: int | None = None, seed: int = 0) -> dict[str, float]:
    if threads:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    volume = rng.normal(0, 1, size=(1, 1, 128, 128, 128)).astype(np.float32)
    timings: dict[str, float] = {}
    with torch.inference_mode():
        t = time.perf_counter()
        locator = FlareLocator(1, 2).eval()
        organs = FlareOrganNet(1, NUM_CLASSES).eval()
        timings["build_s"] = time.perf_counter() - t
        t = time.perf_counter()
        abdomen = locator(torch.from_numpy(volume)).argmax(1)
        timings["locator_128_s"] = time.perf_counter() - t
        t = time.perf_counter()
        labels = organs(torch.from_numpy(volume[:, :, :96, :96, :96].copy())).argmax(1)
        timings["organ_patch_96_s"] = time.perf_counter() - t
    assert abdomen.shape == (1, 128, 128, 128) and labels.shape == (1, 96, 96, 96)
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = FlareArgumentParser(prog="nnUNetv2_flare_smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)

    def body() -> None:
        if args.threads is not None and args.threads < 1:
            raise UsageError(f"--threads must be at least 1; got {args.threads}.")
        timings = run_smoke(args.threads)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        for k, v in timings.items():
            print(f"  {k:<20} {v:7.2f}")
        print("both networks built and ran on a generated volume")
    return run_command(parser.prog, body)


if __name__ == "__main__":
    sys.exit(main())
