"""How well a working grid can represent the reference labels: each organ's DSC after the labels go to the grid the
network's output is made on and back by interpolated class scores, as the cascade restores them.

    python tools/resolution_ceiling.py LABELS_FOLDER --spacing 6,4.5,4.5 --spacing 6,3.5,3.5 [--output_stride 2]

The organ network's stem convolves with stride 2, and its full-resolution logits come from one transposed convolution
of the half-resolution features: its boundaries are decided on a grid of twice the working spacing
(`--output_stride 2`, the default), with at most what that last layer learns in between. Labels are resampled as
nnU-Net's preprocessing does (`resample_torch_fornnunet`, one-hot linear), then back to the reference grid by
linearly interpolated one-hot scores (the same function; the cascade's `--restore linear` interpolates its class scores
the same way with its own resize) and labelled by argmax. Not an upper bound in the strict sense (a network can place an
edge between its output voxels); a measure of how much a grid blurs each organ. Prints a Markdown table: mean DSC per
organ and spacing ("-": the organ is in no reference).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2.preprocessing.resampling.resample_torch import resample_torch_fornnunet

from nnunetv2_flare.evaluation.metrics import dice
from nnunetv2_flare.labels import FLARE_ORGANS, NUM_CLASSES


def round_trip(labels: np.ndarray, spacing_zyx: np.ndarray, grid_zyx: np.ndarray) -> np.ndarray:
    """`labels` resampled to `grid_zyx` mm as nnU-Net preprocesses segmentations, and back by linear class scores."""
    shape = np.maximum(1, np.round(np.array(labels.shape) * spacing_zyx / grid_zyx)).astype(int)
    coarse = resample_torch_fornnunet(labels[None].astype(np.int16), shape, spacing_zyx, grid_zyx, is_seg=True,
                                      num_threads=1, force_separate_z=False)[0]
    one_hot = np.stack([coarse == c for c in range(NUM_CLASSES)]).astype(np.float32)
    scores = resample_torch_fornnunet(one_hot, labels.shape, grid_zyx, spacing_zyx, is_seg=False, num_threads=1,
                                      force_separate_z=False)
    return np.asarray(scores).argmax(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels", type=Path, help="folder of reference label files (.nii.gz)")
    parser.add_argument("--spacing", action="append", required=True,
                        help="working spacing z,y,x in mm (repeat to compare several)")
    parser.add_argument("--output_stride", type=float, default=2.0,
                        help="the network's finest feature grid, in working voxels (FlareOrganNet: 2)")
    args = parser.parse_args()
    files = sorted(args.labels.glob("*.nii.gz"))
    if not files:
        parser.error(f"no .nii.gz files in {args.labels}")
    spacings = [np.array([float(v) for v in s.split(",")]) for s in args.spacing]
    scores = {i: {name: [] for name in FLARE_ORGANS.values()} for i in range(len(spacings))}
    for file in files:
        image = sitk.ReadImage(str(file))
        labels = sitk.GetArrayFromImage(image)
        spacing_zyx = np.array(image.GetSpacing()[::-1])
        for i, working in enumerate(spacings):
            restored = round_trip(labels, spacing_zyx, working * args.output_stride)
            for value, name in FLARE_ORGANS.items():
                if (labels == value).any():
                    scores[i][name].append(dice(labels == value, restored == value))
    print(f"{len(files)} label files from {args.labels}; output grid = {args.output_stride:g} x working spacing")
    print("| organ | " + " | ".join(" x ".join(f"{v:g}" for v in s) + " mm" for s in spacings) + " |")
    print("|---|" + "---|" * len(spacings))
    for name in FLARE_ORGANS.values():
        cells = [f"{np.mean(scores[i][name]):.3f}" if scores[i][name] else "-" for i in range(len(spacings))]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
