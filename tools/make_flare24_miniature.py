"""A miniature FLARE24 Task 2 release made of phantoms: the release's folders, file names and label conventions, at
a size that converts, trains and predicts in seconds (tools/reproduce_flare24.py --size miniature runs the paper's
recipe on it; tests/test_reproduce_flare24.py checks it).

    python tools/make_flare24_miniature.py -o /tmp/mini      # writes /tmp/mini/FLARE-Task2-LaptopSeg

FLARE-Task2-LaptopSeg/
  train_gt_label/imagesTr/FLARE22_Tr_0001_0000.nii.gz ...      labelsTr/FLARE22_Tr_0001.nii.gz ...
  train_pseudo_label/imagesTr/Case_00001_0000.nii.gz ...
  train_pseudo_label/flare22_aladdin5_pseudo/Case1.nii.gz ... Case9.nii.gz, Case_00010.nii.gz ...
  train_pseudo_label/pseudo_label_blackbean_flare22/Case_00001.nii.gz ...
  train_pseudo_label/__MACOSX/pseudo_label_blackbean_flare22/._Case_00001.nii.gz   (archive metadata)
  validation/Validation-Public-Images/FLARETs_0001_0000.nii.gz ...  Validation-Public-Labels/FLARETs_0001.nii.gz ...
  validation/Validation-Hidden-Images/FLARETs_0003_0000.nii.gz ...  (no labels released)

Expert labels (train_gt_label, validation) are the phantoms' own. Phantoms whose slices are thicker than the cascade
accepts from a CT (20 mm; the tiny grid scales clinical slices by 8) are drawn again. The two pseudo-label sets are
those labels with the defect the paper describes in the organisers' pseudo-labels, breaks: each case loses a band of
slices of two of its organs (a different band and organs in each set), the gaps that the label-combining rounds are
meant to fill.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_flare.atomic_io import write_image_atomic
from nnunetv2_flare.inference.inputs.checks import MAX_SPACING_MM
from nnunetv2_flare.phantoms.generator import make_phantom_arrays

RELEASE = "FLARE-Task2-LaptopSeg"
ALADDIN5, BLACKBEAN = "flare22_aladdin5_pseudo", "pseudo_label_blackbean_flare22"
_LABELLED, _PSEUDO, _PUBLIC, _HIDDEN = 10, 11, 12, 13  # seed streams: no two cases share a phantom


def aladdin5_name(i: int) -> str:
    """FLARE24's release names aladdin5's first nine labels Case1 ... Case9, the others Case_00010 ..."""
    return f"Case{i}" if i < 10 else f"Case_{i:05d}"


def broken(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The label with a band of slices (along the first array axis) of two of its organs erased."""
    out = label.copy()
    organs = [int(o) for o in np.unique(label) if o]
    for organ in rng.choice(organs, size=min(2, len(organs)), replace=False):
        slices = np.flatnonzero((label == organ).any(axis=(1, 2)))
        if len(slices) >= 3:  # keep the organ's ends: a break, not a missing organ
            start = int(rng.integers(slices[0] + 1, slices[-1]))
            band = out[start:start + 2]
            band[band == organ] = 0
    return out


def _with_label(label: sitk.Image, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(label)
    return image


def write_miniature_release(output_folder: str | Path, num_labelled: int = 3, num_pseudo: int = 10,
                            num_validation: int = 2, num_hidden: int = 1, seed: int = 0,
                            shape: str = "tiny") -> Path:
    """Write the miniature release under `output_folder`; returns its top folder (…/FLARE-Task2-LaptopSeg)."""
    root = Path(output_folder) / RELEASE
    gt, pseudo, validation = root / "train_gt_label", root / "train_pseudo_label", root / "validation"
    folders = {"gt_images": gt / "imagesTr", "gt_labels": gt / "labelsTr", "pseudo_images": pseudo / "imagesTr",
               "aladdin5": pseudo / ALADDIN5, "blackbean": pseudo / BLACKBEAN,
               "macosx": pseudo / "__MACOSX" / BLACKBEAN, "public_images": validation / "Validation-Public-Images",
               "public_labels": validation / "Validation-Public-Labels",
               "hidden_images": validation / "Validation-Hidden-Images"}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)

    def phantom(stream: int, i: int) -> tuple[sitk.Image, sitk.Image]:
        for attempt in itertools.count():
            drawn = make_phantom_arrays(np.random.SeedSequence([seed, stream, i, attempt]), shape)
            if max(drawn.spacing) <= MAX_SPACING_MM:
                return drawn.to_sitk()

    for i in range(1, num_labelled + 1):
        image, label = phantom(_LABELLED, i)
        write_image_atomic(image, folders["gt_images"] / f"FLARE22_Tr_{i:04d}_0000.nii.gz")
        write_image_atomic(label, folders["gt_labels"] / f"FLARE22_Tr_{i:04d}.nii.gz")
    for i in range(1, num_pseudo + 1):
        image, label = phantom(_PSEUDO, i)
        truth = sitk.GetArrayFromImage(label)
        rng = np.random.default_rng([seed, _PSEUDO, i])
        write_image_atomic(image, folders["pseudo_images"] / f"Case_{i:05d}_0000.nii.gz")
        write_image_atomic(_with_label(label, broken(truth, rng)), folders["aladdin5"] / f"{aladdin5_name(i)}.nii.gz")
        write_image_atomic(_with_label(label, broken(truth, rng)), folders["blackbean"] / f"Case_{i:05d}.nii.gz")
        (folders["macosx"] / f"._Case_{i:05d}.nii.gz").write_bytes(b"\x00\x05\x16\x07")  # AppleDouble header
    for i in range(1, num_validation + 1):
        image, label = phantom(_PUBLIC, i)
        write_image_atomic(image, folders["public_images"] / f"FLARETs_{i:04d}_0000.nii.gz")
        write_image_atomic(label, folders["public_labels"] / f"FLARETs_{i:04d}.nii.gz")
    for i in range(num_validation + 1, num_validation + num_hidden + 1):
        image, _ = phantom(_HIDDEN, i)
        write_image_atomic(image, folders["hidden_images"] / f"FLARETs_{i:04d}_0000.nii.gz")
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", required=True, help="folder to write FLARE-Task2-LaptopSeg/ into")
    p.add_argument("--labelled", type=int, default=3, help="expert-labelled training cases (release: 50)")
    p.add_argument("--pseudo", type=int, default=10, help="pseudo-labelled training cases (release: 2,000; at "
                                                          "least 10 for both of aladdin5's naming schemes)")
    p.add_argument("--validation", type=int, default=2, help="public validation cases with labels (release: 50)")
    p.add_argument("--hidden", type=int, default=1, help="validation cases without labels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", default="tiny", help="phantom grid (nnUNetv2_flare_make_phantoms --shape)")
    args = p.parse_args(argv)
    root = write_miniature_release(args.o, args.labelled, args.pseudo, args.validation, args.hidden, args.seed,
                                   args.shape)
    print(f"wrote a miniature FLARE24 Task 2 release to {root}: {args.labelled} labelled, {args.pseudo} "
          f"pseudo-labelled ({ALADDIN5}, {BLACKBEAN}), {args.validation} public and {args.hidden} hidden validation "
          f"cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
