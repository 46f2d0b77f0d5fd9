"""`nnUNetv2_flare_make_phantoms -d ID -n N [-t T] [--seed S] [--shape full|half|small|tiny] [-o FOLDER]
[--truncated_fov P] [--synthetic_contrast P]`"""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Sequence

from nnunetv2_flare.cli_errors import FlareArgumentParser, UsageError, run_command
from nnunetv2_flare.phantoms.dataset import write_phantom_dataset
from nnunetv2_flare.phantoms.generator import Randomisation
from nnunetv2_flare.phantoms.scan import FOVS, MIN_SCALE, SHAPES

PROG = "nnUNetv2_flare_make_phantoms"


# below MIN_SCALE (1/20) the thinnest slices would be thicker than nnUNetv2_flare_predict reads (scan.py); the
# grid keeps at least 8 voxels in-plane, so below 8 / 512 its voxels would outgrow the body anyway
MIN_SHAPE_FACTOR = max(MIN_SCALE, 8 / 512)


def _shape(value: str) -> float | str:
    """argparse type of --shape: checked while parsing, so that a bad factor is refused before any folder is made."""
    if value in SHAPES:
        return value
    try:
        factor = float(value)
    except ValueError:
        factor = math.nan
    if not MIN_SHAPE_FACTOR <= factor <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"give one of {list(SHAPES)} or a factor in "
                                         f"[{MIN_SHAPE_FACTOR:g}, 1] of the clinical 512 x 512 grid; got {value!r}")
    return factor


def build_parser() -> argparse.ArgumentParser:
    parser = FlareArgumentParser(
        prog=PROG,
        description="Write synthetic abdominal CTs with all 13 FLARE organ labels as an nnU-Net raw dataset "
                    "(DatasetXXX_FlarePhantoms: imagesTr, labelsTr, imagesTs, labelsTs, dataset.json).")
    parser.add_argument("-d", type=int, required=True, help="dataset id (e.g. 900 -> Dataset900_FlarePhantoms)")
    parser.add_argument("-n", type=int, required=True, help="number of training cases")
    parser.add_argument("-t", type=int, default=0, help="number of held-out test cases (imagesTs/labelsTs)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; the same seed gives identical files")
    parser.add_argument("-o", default=None, help="folder to write the dataset folder into (default: $nnUNet_raw)")
    parser.add_argument("--shape", type=_shape, default="full",
                        help="voxel grid: full (clinical 512 x 512, 0.6-1.0 mm, 1-5 mm slices), half, small "
                             "(128 x 128, 4x larger voxels: for CPU demos and tests), tiny, or a factor in "
                             f"[{MIN_SHAPE_FACTOR:g}, 1]")
    parser.add_argument("--fov", choices=sorted(FOVS), default=None,
                        help="field of view for every case (default: random per case)")
    parser.add_argument("--truncated_fov", type=float, default=0.0, metavar="P",
                        help="training cases only: probability that the field of view cuts the patient's flanks, "
                             "as tightly reconstructed or cropped series do (default 0)")
    parser.add_argument("--synthetic_contrast", type=float, default=0.0, metavar="P",
                        help="training cases only: probability that every soft tissue gets a random CT number "
                             "(SynthSeg-style), so a model learns organs by shape and neighbours (default 0)")
    parser.add_argument("-np", type=int, default=1, help="number of processes (default 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: _make(args), usage_errors=(RuntimeError, ValueError))


def _make(args: argparse.Namespace) -> None:
    for flag, value, least in (("-n", args.n, 1), ("-t", args.t, 0), ("-np", args.np, 1)):
        if value < least:
            raise UsageError(f"{flag} must be at least {least}; got {value}.")
    # Randomisation refuses what is not a probability (NaN too), before a folder is made
    randomisation = Randomisation(truncated_fov=args.truncated_fov, synthetic_contrast=args.synthetic_contrast)
    start = time.perf_counter()
    folder = write_phantom_dataset(args.d, args.n, args.t, args.seed, args.o, args.shape, args.fov, args.np,
                                   randomisation=randomisation)
    print(f"wrote {args.n} training and {args.t} test phantoms to {folder} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
