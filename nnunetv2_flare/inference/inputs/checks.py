"""Checks every input before the cascade touches it: refuse what cannot be a CT, repair what is safely repairable.

Every refusal is an `InputRefused` with a one-line reason that says what was found and what to do. Repairs that
change the result are warnings (they go into the report); routine repairs (padding, dtype) are notes.
Order: file-level checks (empty, truncated, unreadable), layout (2D / 4D / channels), geometry (spacing, direction,
origin), intensities (non-finite voxels, constant, not in HU, padding), then the canonical orientation.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from nnunetv2_flare.errors import one_line
from nnunetv2_flare.inference.geometry import Box
from nnunetv2_flare.inference.inputs.orientation import (
    DEFAULT_ORIENTATION,
    Geometry,
    Reorientation,
    direction_matrix,
    plan_reorientation,
    reoriented_image,
)

# spacing limits (mm): below 0.05 mm or above 20 mm no CT scanner produces; 1e-6 or 100 mm are broken headers
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0
ANISOTROPY_WARNING = 5.0  # largest / smallest spacing
MAX_NONFINITE_FRACTION = 0.01  # more NaN / inf than this and the scan is broken, not just a few bad voxels
AIR_HU = -1024.0  # padding below this (-2048, -3024 outside the scan circle) is set to air
AIR_CHECK_PERCENTILE = 0.5
AIR_CHECK_HU = -500.0  # a CT of a body has air (outside, lungs, bowel gas) in its lowest 0.5 %
NOT_HU_MAX = 1000.0  # nothing negative but values this high: not HU (smaller ranges only get the no-air warning)
OBLIQUE_WARNING_DEGREES = 1.0
# a DICOM slice further than this fraction of the slice spacing from where ITK's even grid puts it is misplaced
SLICE_POSITION_TOLERANCE = 0.1
# a label map: whole numbers >= 0 and few of them (FLARE has 14, TotalSegmentator 118); a CT in HU has negative
# values, and an 8-bit windowed CT uses (nearly) all 256 grey values
MAX_LABEL_VALUES = 128
SLAB = 16  # slices per chunk when scanning large float volumes (bounded temporary memory)
SAMPLE_VOXELS = 2_000_000

NIFTI1_HEADER_BYTES = 348  # a NIfTI-1 header's size, also its first field (sizeof_hdr)


class InputRefused(ValueError):
    """A case that cannot be segmented; the message is one line: what was found and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


# ------------------------------------------------------------------------------------------------ files
def _nifti_expected_bytes(header: bytes) -> int | None:
    """vox_offset + data size from a NIfTI-1 header, or None if this is not one we understand."""
    if len(header) < NIFTI1_HEADER_BYTES:
        return None
    for endian in "<>":
        if struct.unpack(endian + "i", header[:4])[0] == NIFTI1_HEADER_BYTES:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            vox_offset = struct.unpack(endian + "f", header[108:112])[0]
            ndim = dims[0]
            if not 1 <= ndim <= 7 or bitpix <= 0:
                return None
            return int(vox_offset) + math.prod(max(1, d) for d in dims[1:ndim + 1]) * bitpix // 8
    return None


def _gzip_complete_size(path: Path) -> int | None:
    """Uncompressed size of a complete gzip file, None if the stream ends early (truncated) or is corrupt."""
    total = 0
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            try:
                total += len(decompressor.decompress(chunk))
            except zlib.error:
                return None
            while decompressor.eof and decompressor.unused_data:  # a following gzip member
                rest = decompressor.unused_data
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                total += len(decompressor.decompress(rest))
    return total if decompressor.eof else None


def check_file_complete(path: str | os.PathLike) -> None:
    """Refuse empty and truncated image files before reading: ITK reads a truncated NIfTI without complaint and
    fills the missing part with zeros."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise InputRefused(f"{path.name}: the file is empty (0 bytes); copy it again.")
    name = path.name.lower()
    if name.endswith(".nii"):
        with open(path, "rb") as f:
            expected = _nifti_expected_bytes(f.read(NIFTI1_HEADER_BYTES))
        if expected is not None and size < expected:
            raise InputRefused(f"{path.name}: the file is truncated ({size} of {expected} bytes); copy it again.")
    elif name.endswith(".nii.gz"):
        try:
            with gzip.open(path, "rb") as f:
                expected = _nifti_expected_bytes(f.read(NIFTI1_HEADER_BYTES))
        except (OSError, EOFError):
            raise InputRefused(f"{path.name}: not a readable gzip file (corrupt or truncated); "
                               f"copy it again.") from None
        if expected is None:
            return
        with open(path, "rb") as f:  # fast path: the gzip trailer holds the uncompressed size (mod 2^32)
            f.seek(-4, os.SEEK_END)
            trailer = struct.unpack("<I", f.read(4))[0]
        if trailer == expected % 2 ** 32:
            return
        complete = _gzip_complete_size(path)
        if complete is None or complete < expected:
            raise InputRefused(f"{path.name}: the file is truncated or corrupt (the compressed data ends early); "
                               f"copy it again.")


def read_failure_reason(path: str | os.PathLike, error: Exception) -> str:
    """A one-line reason from ITK's multi-line exception text."""
    text = str(error)
    name = Path(path).name
    if "Unable to determine ImageIO reader" in text:
        return f"{name}: not a readable image (unknown format or corrupt file)."
    if "data not read completely" in text or "fread got only" in text or "expected" in text and "received" in text:
        return f"{name}: the file is truncated; copy it again."
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("/")]
    detail = next((ln for ln in reversed(lines) if "ERROR" not in ln.upper()[:12]), lines[-1] if lines else text)
    return f"{name}: cannot be read ({detail[:200]})."


def _nifti_header(path: Path) -> bytes:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            return f.read(NIFTI1_HEADER_BYTES)
    except (OSError, EOFError):
        return b""


def check_nifti_header_spacing(path: str | os.PathLike) -> None:
    """ITK replaces a zero / missing pixdim by 1 mm and turns a negative one into a flip: read the raw header and
    refuse such files."""
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return
    header = _nifti_header(path)
    for endian in "<>":
        if len(header) >= NIFTI1_HEADER_BYTES and struct.unpack(endian + "i", header[:4])[0] == NIFTI1_HEADER_BYTES:
            ndim = struct.unpack(endian + "h", header[40:42])[0]
            pixdim = struct.unpack(endian + "3f", header[80:92])[:max(1, min(3, ndim))]
            geometry = struct.unpack(endian + "18f", header[256:328])  # quatern, qoffset, srow_x/y/z
            if not all(math.isfinite(v) for v in geometry):  # ITK can hang on these: check before reading
                raise InputRefused(f"{path.name}: the header's position / orientation (qform / sform) holds "
                                   f"NaN or infinite numbers; fix the header.")
            if not all(math.isfinite(p) and p > 0 for p in pixdim):
                raise InputRefused(f"{path.name}: the header's voxel spacing (pixdim) is {fmt(pixdim)} mm; zero, "
                                   f"negative or missing spacing cannot be used. Fix the header (spacing in mm, "
                                   f"x y z).")
            return


# ------------------------------------------------------------------------------------------------ layout
def to_single_channel_3d(image: sitk.Image, name: str = "input") -> tuple[sitk.Image, list[str]]:
    """3D single-channel image or refusal; a 4D image with one time point is accepted as 3D (with a note)."""
    notes: list[str] = []
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputRefused(f"{name}: {image.GetNumberOfComponentsPerPixel()} values per voxel (a multi-channel or "
                           f"colour image); give a single-channel CT in HU.")
    dim = image.GetDimension()
    if dim == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise InputRefused(f"{name}: a 4D image with {size[3]} volumes ({' x '.join(map(str, size))}); give "
                               f"one 3D CT per file (e.g. split the series).")
        image = image[:, :, :, 0]
        notes.append("4D image with a single volume: read as 3D.")
    elif dim != 3:
        raise InputRefused(f"{name}: a {dim}D image of size {' x '.join(map(str, image.GetSize()))}; the cascade "
                           f"needs a 3D CT volume (a single slice must be stored as a 3D image with one slice).")
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputRefused(f"{name}: complex voxel values; give a real-valued CT in HU.")
    return image, notes


# ------------------------------------------------------------------------------------------------ geometry
def check_geometry(image: sitk.Image, name: str = "input") -> list[str]:
    spacing = image.GetSpacing()
    if not all(math.isfinite(s) and MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing):
        raise InputRefused(f"{name}: voxel spacing {fmt(spacing)} mm (x, y, z) is outside "
                           f"{MIN_SPACING_MM:g}..{MAX_SPACING_MM:g} mm; the header is wrong. Fix the spacing.")
    if not all(math.isfinite(o) for o in image.GetOrigin()):
        raise InputRefused(f"{name}: the origin {fmt(image.GetOrigin())} is not finite; fix the header.")
    direction = direction_matrix(image)
    if not np.all(np.isfinite(direction)) or not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise InputRefused(f"{name}: the direction cosines {fmt(direction.ravel())} are not orthonormal; fix the "
                           f"header.")
    warnings = []
    if max(spacing) / min(spacing) > ANISOTROPY_WARNING:
        warnings.append(f"Strongly anisotropic voxels {fmt(spacing)} mm: organs thinner than the largest spacing "
                        f"may be missed or blocky.")
    return warnings


def check_slice_positions(image: sitk.Image, positions: list[str | None], name: str = "input") -> None:
    """ITK reads a DICOM series onto an even grid: slice k at the origin plus k times one spacing along the slice
    normal. The slices' own positions (ImagePositionPatient, projected on that normal) decide whether that is true;
    where a slice lies off its grid position by more than SLICE_POSITION_TOLERANCE of the spacing (missing slices,
    two acquisitions in one series) the series is refused: resampling it would invent slices across the gap and
    put labels on slices no source image has (a DICOM-SEG references each source slice). Skipped where a slice
    has no position."""
    if len(positions) < 3 or any(not p for p in positions):
        return
    normal = direction_matrix(image)[:, 2]
    try:
        along = np.array([np.asarray(p.split("\\"), dtype=float) @ normal for p in positions])
    except ValueError:  # a malformed position: nothing to compare
        return
    spacing = image.GetSpacing()[2]
    grid = float(np.asarray(image.GetOrigin()) @ normal) + spacing * np.arange(len(along))
    misplaced = float(np.abs(along - grid).max())
    if misplaced <= SLICE_POSITION_TOLERANCE * spacing:
        return
    gaps = np.abs(np.diff(along))
    shown = sorted({round(float(g), 2) for g in gaps})
    listed = ", ".join(f"{g:g}" for g in shown[:4]) + (" ..." if len(shown) > 4 else "")
    cause = ("two slices share a position: the series mixes acquisitions" if gaps.min() < 1e-3
             else "slices are missing, or the series mixes acquisitions")
    raise InputRefused(f"{name}: the slice positions are not evenly spaced (gaps of {listed} mm between "
                       f"neighbouring slices): {cause}. Read as evenly spaced ({spacing:.3g} mm), slices would be "
                       f"misplaced by up to {misplaced:.1f} mm; export the complete series, or resample it onto an "
                       f"even grid yourself.")


# ------------------------------------------------------------------------------------------------ intensities
def _slabs(n: int):
    for z in range(0, n, SLAB):
        yield slice(z, min(n, z + SLAB))


def _paste_slabs(image: sitk.Image, repair: Callable[[sitk.Image], sitk.Image | None],
                 in_place: bool) -> sitk.Image:
    """`image` with `repair(slab) -> slab or None` (None: unchanged) applied a slab of slices at a time.

    A slab pasted into an image overwrites its buffer, so a huge scan is never held twice. With `in_place` the
    caller's image itself changes (the cascade's own image, read from a file); without, a shallow copy is changed:
    SimpleITK copies the voxels once, at the first paste, and the caller's image stays as it was."""
    if not in_place:
        image = sitk.Image(image)
    nx, ny, nz = image.GetSize()
    for s in _slabs(nz):
        # RegionOfInterest, not image[:, :, a:b]: the slicing operator is several times slower here
        repaired = repair(sitk.RegionOfInterest(image, [nx, ny, s.stop - s.start], [0, 0, s.start]))
        if repaired is not None:
            image[:, :, s.start:s.stop] = repaired
    return image


def _replace_non_finite(image: sitk.Image, name: str, in_place: bool = False) -> tuple[sitk.Image, list[str]]:
    view = sitk.GetArrayViewFromImage(image)
    bad, low = 0, math.inf
    for s in _slabs(view.shape[0]):
        finite = np.isfinite(view[s])
        bad += int(finite.size - np.count_nonzero(finite))
        if finite.any():
            low = min(low, float(view[s][finite].min()))
    if bad == 0:
        return image, []
    fraction = bad / view.size
    if fraction > MAX_NONFINITE_FRACTION:
        raise InputRefused(f"{name}: {fraction:.1%} of the voxels are NaN or infinite (more than "
                           f"{MAX_NONFINITE_FRACTION:.0%}); the scan is damaged. Reconstruct or export it again.")
    del view  # the slabs are written into the image's buffer below

    def repair(slab: sitk.Image) -> sitk.Image | None:
        part = sitk.GetArrayFromImage(slab)
        broken = ~np.isfinite(part)
        if not broken.any():
            return None
        part[broken] = low
        return sitk.GetImageFromArray(part)

    fixed = _paste_slabs(image, repair, in_place)
    return fixed, [f"{bad} NaN / infinite voxels ({fraction:.3%}) set to the lowest finite value {low:g}."]


def _sample(view: np.ndarray) -> np.ndarray:
    step = max(1, int(round((view.size / SAMPLE_VOXELS) ** (1 / 3))))
    return np.asarray(view[::step, ::step, ::step], dtype=np.float32).ravel()


def _refuse_label_map(image: sitk.Image, name: str, low: float, high: float) -> None:
    """A segmentation in the input folder (labelsTr copied into imagesTs, an earlier output) must not be segmented
    as if it were a CT: refuse it, naming what it looks like. Checked on a sample: cheap, and a label map's few
    values show in any sample."""
    values = np.unique(_sample(sitk.GetArrayViewFromImage(image)))
    if len(values) > MAX_LABEL_VALUES or not np.array_equal(values, np.round(values)):
        return
    raise InputRefused(f"{name}: a label map, not a CT ({len(values)} distinct whole values {low:g}..{high:g}, "
                       f"nothing negative); give the CT image (labels belong in labelsTr or are this command's "
                       f"output), or move this file out of the input.")


def check_intensities(image: sitk.Image, name: str = "input",
                      in_place: bool = False) -> tuple[sitk.Image, list[str], list[str]]:
    """(image, warnings, notes): non-finite voxels replaced, not-CT refused, padding set to air, compact dtype.
    `in_place`: the repairs may overwrite `image`'s voxels instead of copying a possibly huge scan."""
    warnings: list[str] = []
    notes: list[str] = []
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        repaired, w = _replace_non_finite(image, name, in_place)
        in_place = in_place or repaired is not image  # a repaired copy is ours to change
        image = repaired
        warnings += w
        if image.GetPixelID() == sitk.sitkFloat64:  # halves the memory; CT needs no double precision
            image, in_place = sitk.Cast(image, sitk.sitkFloat32), True
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    low, high = stats.GetMinimum(), stats.GetMaximum()
    if low == high:
        raise InputRefused(f"{name}: every voxel has the value {low:g} (a constant image); nothing to segment.")
    if low >= 0 and high < NOT_HU_MAX:
        _refuse_label_map(image, name, low, high)
    if low >= -0.5 and high <= 1.5:
        raise InputRefused(f"{name}: values range {low:g}..{high:g}, a normalized image, not a CT in Hounsfield "
                           f"units (air -1000, water 0); give the original CT.")
    if low >= 0 and high >= NOT_HU_MAX:  # raw CT numbers (air ~ 0, tissue ~ 1050) or an MR with a dark background
        raise InputRefused(f"{name}: values range {low:g}..{high:g} with nothing negative, so not Hounsfield units "
                           f"(air is -1000 HU): an MR or a CT without its rescale slope / intercept "
                           f"(HU = value * slope + intercept, often value - 1024). Convert it to HU.")
    p_low = float(np.percentile(_sample(sitk.GetArrayViewFromImage(image)), AIR_CHECK_PERCENTILE))
    if p_low > AIR_CHECK_HU:
        warnings.append(f"No air in the image (its lowest {AIR_CHECK_PERCENTILE}% is above {AIR_CHECK_HU:g}; range "
                        f"{low:g}..{high:g}): is this a CT in HU? Check the result.")
    if low < AIR_HU:
        pixel_type = image.GetPixelIDValue()
        image = _paste_slabs(image, lambda slab: sitk.Clamp(slab, pixel_type, AIR_HU, high), in_place)
        notes.append(f"Values below {AIR_HU:g} HU (minimum {low:g}, e.g. padding outside the scan circle) set to "
                     f"{AIR_HU:g} HU (air).")
        low = AIR_HU
    integer_types = (sitk.sitkUInt16, sitk.sitkInt32, sitk.sitkUInt32, sitk.sitkInt64, sitk.sitkUInt64)
    if image.GetPixelID() in integer_types and -32768 <= low and high <= 32767:
        image = sitk.Cast(image, sitk.sitkInt16)  # lossless here, and a quarter of int64's memory
    return image, warnings, notes


# ------------------------------------------------------------------------------------------------ together
@dataclass
class PreparedInput:
    """The checked, repaired, canonically oriented image and what is needed to put labels back on the input grid."""
    image: sitk.Image
    geometry: Geometry
    reorientation: Reorientation | None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def _turned(self) -> bool:
        return self.reorientation is not None and not self.reorientation.is_identity

    def new_label_image(self) -> sitk.Image:
        """Zero labels (uint8) with exactly the input's grid, to be filled by `paste_labels`."""
        canonical_shape = self.image.GetSize()[::-1]
        size_xyz = self.box_on_input(Box.whole(canonical_shape), canonical_shape).shape[::-1]
        return self.geometry.apply(sitk.Image([int(n) for n in size_xyz], sitk.sitkUInt8))

    def paste_labels(self, labels: sitk.Image, box: Box, part: np.ndarray) -> None:
        """Writes `part`, the labels of `box` of the processed array, into `labels` (new_label_image) in place: the
        cascade restores a huge scan's labels a slab at a time instead of building full-size arrays."""
        if self._turned():
            part = np.ascontiguousarray(self.reorientation.to_original(part))
        box = self.box_on_input(box, self.image.GetSize()[::-1])
        (x0, y0, z0), (x1, y1, z1) = box.start[::-1], box.stop[::-1]
        labels[x0:x1, y0:y1, z0:z1] = sitk.GetImageFromArray(part)

    def canonical_labels(self, labels: sitk.Image) -> np.ndarray:
        """A read-only view (no copy) of the labels on the input grid, in the processed orientation."""
        view = sitk.GetArrayViewFromImage(labels)
        return self.reorientation.to_canonical(view) if self._turned() else view

    def box_on_input(self, box: Box, canonical_shape) -> Box:
        if not self._turned():
            return box
        return Box(*self.reorientation.box_to_original(box.start, box.stop, canonical_shape))

    def values_on_input(self, values_zyx) -> tuple:
        """Per-axis values of the processed array (e.g. the organ spacing), for the input's array axes."""
        if not self._turned():
            return tuple(values_zyx)
        return self.reorientation.values_to_original(values_zyx)

    def report(self) -> dict:
        r = self.reorientation
        return {"input_orientation": r.source_code if r else "as read",
                "processed_orientation": r.target_code if r else "as read"}


def prepare_input(image: sitk.Image, orientation: str | None = DEFAULT_ORIENTATION, name: str = "input",
                  in_place: bool = False) -> PreparedInput:
    """All checks on an image already read; `orientation` None processes the array as read (no reorientation).
    `in_place`: the repairs may overwrite `image`'s voxels (the caller read it and needs it no more), so that a
    huge scan is not copied; otherwise `image` is left as it was."""
    image, notes = to_single_channel_3d(image, name)
    warnings = check_geometry(image, name)
    geometry = Geometry.of(image)
    image, w, n = check_intensities(image, name, in_place)
    warnings += w
    notes += n
    reorientation = None
    if orientation:
        reorientation = plan_reorientation(image, orientation)
        if reorientation.oblique_degrees > OBLIQUE_WARNING_DEGREES:
            warnings.append(f"Oblique scan (axes up to {reorientation.oblique_degrees:.1f} degrees from the patient "
                            f"axes): processed in the nearest axis-aligned orientation "
                            f"({reorientation.source_code}) without resampling.")
        if not reorientation.is_identity:
            notes.append(f"Stored in {reorientation.source_code} orientation: processed in "
                         f"{reorientation.target_code} and mapped back.")
        image = reoriented_image(image, reorientation)
    return PreparedInput(image, geometry, reorientation, warnings, notes)
