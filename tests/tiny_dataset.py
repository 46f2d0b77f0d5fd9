"""A tiny labelled nnU-Net raw dataset of synthetic abdominal CTs, for tests and demos (no downloads).

Each case is a body-shaped ellipse of soft tissue in air with a handful of FLARE organs drawn as ellipsoids of
distinct intensities (Hounsfield-like values plus noise); positions, sizes and spacings vary a little per case.

    from tests.tiny_dataset import write_tiny_dataset
    folder = write_tiny_dataset(tmp_path / "nnUNet_raw")          # Dataset220_TinyFlare
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_flare.labels import dataset_json_labels

# organ id -> (centre as a fraction of the body's (z, y, x) extent, radii in mm (z, y, x), mean intensity in HU)
ORGANS: dict[int, tuple[tuple[float, float, float], tuple[float, float, float], float]] = {
    1: ((0.45, 0.45, 0.30), (18.0, 22.0, 24.0), 60.0),    # liver (patient's right = low x in this toy)
    3: ((0.45, 0.55, 0.74), (12.0, 12.0, 12.0), 110.0),   # spleen
    2: ((0.60, 0.68, 0.36), (10.0, 7.0, 7.0), 160.0),     # right kidney
    13: ((0.60, 0.68, 0.64), (10.0, 7.0, 7.0), 170.0),    # left kidney
    5: ((0.50, 0.62, 0.50), (30.0, 4.0, 4.0), 250.0),     # aorta (tube along z)
}
ORGAN_IDS: tuple[int, ...] = tuple(sorted(ORGANS))


def synthetic_case(shape: Sequence[int], spacing_zyx: Sequence[float], rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 in HU, label uint8), both in array order (z, y, x)."""
    shape = tuple(int(s) for s in shape)
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) * sp for n, sp in zip(shape, spacing_zyx)], indexing="ij")
    extent = [n * sp for n, sp in zip(shape, spacing_zyx)]
    image = np.full(shape, -1000.0, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    # body: elliptic cylinder along z covering most of the slice
    cy, cx = extent[1] / 2, extent[2] / 2
    body = ((grid[1] - cy) / (0.42 * extent[1])) ** 2 + ((grid[2] - cx) / (0.46 * extent[2])) ** 2 <= 1
    image[body] = 0.0
    jitter = rng.uniform(-0.04, 0.04, size=3)
    for organ, (centre, radii, hu) in ORGANS.items():
        c = [(f + j) * e for f, j, e in zip(centre, jitter, extent)]
        r = [ri * rng.uniform(0.85, 1.15) for ri in radii]
        inside = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r)) <= 1
        image[inside] = hu
        label[inside] = organ
    image += rng.normal(0.0, 12.0, size=shape).astype(np.float32)
    return image, label


def _write(array: np.ndarray, spacing_zyx: Sequence[float], path: Path) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    img.SetOrigin((-100.0, -80.0, 20.0))
    sitk.WriteImage(img, str(path), useCompression=True)


def write_tiny_dataset(raw_root: str | Path, dataset_id: int = 220, name: str = "TinyFlare", num_cases: int = 3,
                       shape: Sequence[int] = (40, 56, 56), spacing_zyx: Sequence[float] = (2.5, 1.2, 1.2),
                       num_test_cases: int = 1, seed: int = 0) -> Path:
    """Write Dataset{id:03d}_{name} (imagesTr, labelsTr, imagesTs, dataset.json) under `raw_root`; returns its
    folder. Shapes and spacings vary by up to ~10 % per case, so resampling and cropping are exercised."""
    rng = np.random.default_rng(seed)
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(num_cases + num_test_cases):
        case_shape = [int(round(s * rng.uniform(0.9, 1.1))) for s in shape]
        case_spacing = [sp * rng.uniform(0.9, 1.1) for sp in spacing_zyx]
        image, label = synthetic_case(case_shape, case_spacing, rng)
        if i < num_cases:
            case = f"tiny_{i:03d}"
            _write(image.astype(np.int16), case_spacing, folder / "imagesTr" / f"{case}_0000.nii.gz")
            _write(label, case_spacing, folder / "labelsTr" / f"{case}.nii.gz")
        else:
            _write(image.astype(np.int16), case_spacing,
                   folder / "imagesTs" / f"tiny_test_{i - num_cases:03d}_0000.nii.gz")
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": dataset_json_labels(),
        "numTraining": num_cases,
        "file_ending": ".nii.gz",
        "name": name,
        "description": "synthetic toy abdomen for tests (nnunetv2_flare tests/tiny_dataset.py)",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder
