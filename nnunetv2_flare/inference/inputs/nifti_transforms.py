"""NIfTI's two position transforms, the qform and the sform, where a file's disagree.

Readers differ in which one they take when both are set: nibabel, and so nnU-Net's NibabelIO and
NibabelIOWithReorient (FlarePlans' reader), and FSL take the sform whenever its code is set; ITK (SimpleITK 2.5 /
ITK 5.4, and so nnU-Net's SimpleITKIO) takes the sform where its code is 1 (scanner), else the qform (tried with
sform / qform codes 1/1, 1/2, 2/1, 2/2, 4/1). A file whose two transforms disagree is therefore in two places at
once, depending on the reader; which one ITK took is read off the image it gave, not assumed.

The cascade reads every image with SimpleITK and then takes the transform the models' reader takes (the plans'
image_reader_writer: nibabel's choice for the Nibabel readers, ITK's otherwise), with a warning that names it, and
writes the labels with the input's own qform and sform (codes included): every viewer then puts them on the CT,
whichever transform it takes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_flare.atomic_io import atomic_write, write_image_atomic

NIBABEL_READERS = ("NibabelIO", "NibabelIOWithReorient")  # nnU-Net's readers that take nibabel's affine
DISAGREEMENT_MM = 0.01  # above float rounding of the quaternion, far below a voxel
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])  # nibabel's world is RAS, ITK's LPS
FILE_NOTES = "ITK_FileNotes"  # SimpleITK writes it as NIfTI's descrip and as a MetaImage / NRRD header field


@dataclass(frozen=True)
class NiftiTransforms:
    """A NIfTI header's qform and sform (RAS, voxel -> mm) with their codes."""
    qform: np.ndarray
    qform_code: int
    sform: np.ndarray
    sform_code: int

    def distance_mm(self, size_xyz) -> float:
        """How far apart the two transforms put the image's corner voxels, at most."""
        corners = np.array([[x, y, z, 1.0] for x in (0, size_xyz[0] - 1) for y in (0, size_xyz[1] - 1)
                            for z in (0, size_xyz[2] - 1)]).T
        return float(np.linalg.norm((self.qform - self.sform)[:3] @ corners, axis=0).max())


def read_transforms(path: str | os.PathLike) -> NiftiTransforms | None:
    """The header's transforms where both are set; None for other files and headers with one transform."""
    if not str(path).lower().endswith((".nii", ".nii.gz")):
        return None
    import nibabel as nib

    header = nib.load(str(path)).header  # the header only: the voxels stay on disk
    if not isinstance(header, nib.Nifti1Header):
        return None
    qform, qform_code = header.get_qform(coded=True)
    sform, sform_code = header.get_sform(coded=True)
    if qform is None or sform is None or not (int(qform_code) and int(sform_code)):
        return None
    return NiftiTransforms(np.asarray(qform, float), int(qform_code), np.asarray(sform, float), int(sform_code))


def affine_of(image: sitk.Image) -> np.ndarray:
    """The image's voxel -> RAS mm transform, as a NIfTI header would hold it."""
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = RAS_TO_LPS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = RAS_TO_LPS @ np.asarray(image.GetOrigin(), float)
    return affine


def set_affine(image: sitk.Image, affine: np.ndarray) -> sitk.Image:
    """Give `image` the geometry of a RAS voxel -> mm transform (spacing, LPS origin and direction); nibabel's reading
    of a file, in ITK's terms."""
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(affine)):
        raise ValueError("the image's affine (voxel -> mm) has a zero or non-finite column; fix its header.")
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in RAS_TO_LPS @ affine[:3, 3]])
    image.SetDirection([float(v) for v in (RAS_TO_LPS @ (affine[:3, :3] / spacing)).ravel()])
    return image


def take_models_transform(image: sitk.Image, path: str | os.PathLike,
                          reader: str) -> tuple[sitk.Image, NiftiTransforms | None, str | None]:
    """(image, the file's transforms where they disagree, warning). `reader` 'nibabel' or 'itk': whose choice of
    transform the models were trained with. SimpleITK has read `image` with ITK's; for 'nibabel' the image gets
    nibabel's (the sform)."""
    transforms = read_transforms(path)
    if transforms is None or transforms.distance_mm(image.GetSize()) <= DISAGREEMENT_MM:
        return image, None, None
    itk_took = "sform" if np.allclose(affine_of(image), transforms.sform, atol=1e-3) else "qform"
    used = "sform" if reader == "nibabel" else itk_took
    if used != itk_took:
        set_affine(image, transforms.sform)
    readers = ("nnU-Net's NibabelIO (the models' reader), nibabel and FSL" if reader == "nibabel"
               else "nnU-Net's SimpleITKIO (the models' reader) and SimpleITK")
    warning = (f"The header's sform (code {transforms.sform_code}) and qform (code {transforms.qform_code}) "
               f"disagree, placing voxels up to {transforms.distance_mm(image.GetSize()):.1f} mm apart: used the "
               f"{used}, the one {readers} take; the labels carry the input's sform and qform, so every viewer puts "
               f"them on the CT.")
    return image, transforms, warning


def write_label_image(image: sitk.Image, path: str | os.PathLike, transforms: NiftiTransforms | None = None) -> None:
    """A label image, atomically, its file notes (the request record) included. `transforms`: the input's
    disagreeing qform and sform, given to a NIfTI output as they were (SimpleITK writes one transform into both)."""
    path = Path(path)
    if transforms is None or not path.name.lower().endswith((".nii", ".nii.gz")):
        write_image_atomic(image, path)
        return
    import nibabel as nib

    nii = nib.Nifti1Image(np.asarray(sitk.GetArrayViewFromImage(image)).transpose(2, 1, 0), None)
    nii.set_qform(transforms.qform, code=transforms.qform_code)
    nii.set_sform(transforms.sform, code=transforms.sform_code)
    nii.header.set_xyzt_units("mm")
    if image.HasMetaDataKey(FILE_NOTES):
        nii.header["descrip"] = image.GetMetaData(FILE_NOTES).encode()
    atomic_write(path, lambda tmp: nib.save(nii, str(tmp)))
