"""Helpers for the unusual-input tests: CT-like volumes, deterministic array "networks" that depend on voxel order
(so a pipeline that is not orientation-invariant gives different labels), and a small predictor built from them."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from cascade_oracles import predictor_from_networks
from nnunetv2_flare.inference.models.backends import argmax_labels
from nnunetv2_flare.inference.models.loading import CTNormalization
from nnunetv2_flare.inference.predictor import FlareCascadePredictor
from nnunetv2_flare.labels import NUM_CLASSES

NORM = CTNormalization(-1000.0, 1000.0, 0.0, 200.0)
SMALL = dict(locator_size=(32, 32, 32), organ_patch_size=(16, 16, 16), organ_spacing=(4.0, 3.0, 3.0),
             min_component_side=4, margin_mm=6.0)


class ArrayLocator:
    """Foreground where the normalized intensity is tissue (above -0.5, i.e. -100 HU), ignoring the geometry."""

    def __call__(self, x: np.ndarray, grid=None) -> np.ndarray:
        return (x[0, 0] > -0.5).astype(np.uint8)


class ArrayOrganNet:
    """Labels from intensity plus a ramp along each array axis of the patch: depends on the voxel order, like a real
    network, and is exactly reproducible on identical input."""

    def __call__(self, x: np.ndarray, grid=None) -> np.ndarray:
        v = x[0, 0]
        z, y, xx = np.meshgrid(*[np.linspace(0, 1, n, dtype=np.float32) for n in v.shape], indexing="ij")
        score = v + 0.9 * z - 0.6 * y + 0.3 * xx  # asymmetric along every axis
        levels = np.linspace(-1.0, 2.0, NUM_CLASSES, dtype=np.float32)
        logits = -(score[None] - levels[:, None, None, None]) ** 2
        logits[0] = np.where(v > -0.5, logits[0] - 10, logits[0] + 10)  # background outside tissue
        return argmax_labels(logits)


def array_predictor(**options) -> FlareCascadePredictor:
    kwargs = {**SMALL, "progress": False, **options}
    return predictor_from_networks(ArrayLocator(), ArrayOrganNet(), NORM, NORM, **kwargs)


def body_ct(shape_zyx=(20, 40, 48), spacing_xyz=(1.6, 1.4, 3.0), padding: float | None = None,
            seed: int = 0, dtype=np.int16) -> sitk.Image:
    """Air, an elliptic body with denser blobs and a 'spine'; optional padding value outside the scan circle."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape_zyx
    y, x = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2 <= 1
    circle = x ** 2 + y ** 2 <= 1
    vol = np.full(shape_zyx, -1000.0, np.float32)
    for k in range(nz):
        t = k / max(1, nz - 1)
        s = vol[k]
        s[body] = 20
        s[body & (((x + 0.3) / 0.3) ** 2 + ((y + 0.1 * t) / 0.25) ** 2 <= 1)] = 80 + 60 * t
        s[body & (((x - 0.4) / 0.15) ** 2 + ((y - 0.2) / 0.2) ** 2 <= 1)] = 160
        s[((x / 0.1) ** 2 + ((y - 0.45) / 0.1) ** 2) <= 1] = 500
        if padding is not None:
            s[~circle] = padding
    vol[:, body] += rng.normal(0, 10, (nz, int(body.sum())))
    image = sitk.GetImageFromArray(vol.astype(dtype))
    image.SetSpacing(spacing_xyz)
    image.SetOrigin((-30.0, 12.5, 400.0))
    return image


def with_array(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def same_geometry(a: sitk.Image, b: sitk.Image, atol: float = 1e-4) -> bool:
    return a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6, rtol=1e-5) \
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=atol, rtol=1e-6) \
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)


def write_dicom_series(folder: Path, uid: str, n: int, prefix: str, positions_mm=None,
                       instance_numbers=None) -> None:
    """Minimal CT DICOM slices (int16 HU) of one series; slice k at z = positions_mm[k] (default 2 k mm)."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(n):
        z = 2.0 * k if positions_mm is None else positions_mm[k]
        number = k if instance_numbers is None else instance_numbers[k]
        s = sitk.GetImageFromArray(np.random.default_rng(k).integers(-1000, 500, (32, 32)).astype(np.int16))
        for tag, value in [("0020|000e", uid), ("0020|000d", "1.2.3.4"), ("0008|0060", "CT"),
                           ("0020|0032", f"0\\0\\{z}"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0028|0030", "0.8\\0.8"), ("0020|0013", str(number)), ("0008|0018", f"{uid}.{k}")]:
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{k}.dcm"))
        writer.Execute(s)


def tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith((".tmp-", ".lock-")))


def env_with_threads(threads: int = 1) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
