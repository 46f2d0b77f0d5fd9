"""Geometry never changes silently. A DICOM series whose slice positions are not evenly spaced is refused
(its positions decide, not its slice count); a NIfTI whose sform and qform disagree is read with the transform the
models' reader takes, with a warning naming it, and its labels carry the input's two transforms. Array "networks"
(unusual_inputs.py): milliseconds a case."""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from cascade_oracles import real_data
from nnunetv2_flare.inference import CascadeSettings, FlareCascadePredictor
from nnunetv2_flare.inference.inputs.checks import InputRefused
from nnunetv2_flare.inference.inputs.reading import dicom_series_files, read_image
from nnunetv2_flare.inference.models.loading import Phase
from nnunetv2_flare.labels import NUM_CLASSES
from unusual_inputs import NORM, SMALL, ArrayLocator, ArrayOrganNet, array_predictor, body_ct, write_dicom_series


@pytest.fixture(autouse=True)
def _quiet_itk():
    sitk.ProcessObject.SetGlobalWarningDisplay(False)


# ------------------------------------------------------------------------------------------------ DICOM slices
@pytest.mark.real_data
@pytest.mark.parametrize("removed, gaps", [((8, 9, 10, 11, 12, 13), "2, 14 mm"),
                                           ((3, 9, 10, 11, 12, 13), "2, 4, 12 mm")])
def test_real_series_with_missing_slices_is_refused(tmp_path, removed, gaps):
    """6 of the 20 slices (2 mm apart) of the TotalSegmentator DICOM example gone (linked copies in tmp_path)."""
    z = np.array([2.0 * k for k in range(20) if k not in removed])
    even = z[0] + (z[-1] - z[0]) / (len(z) - 1) * np.arange(len(z))  # where an even grid would put them
    misplaced = f"{np.abs(z - even).max():.1f} mm"
    kept = tmp_path / "series"
    kept.mkdir()
    for k, f in enumerate(dicom_series_files(real_data("totalsegmentator/example_ct_dicom"))):
        if k not in removed:
            (kept / Path(f).name).symlink_to(f)
    with pytest.raises(InputRefused) as info:
        read_image(kept)
    message = str(info.value)
    assert f"gaps of {gaps} between neighbouring slices" in message and f"misplaced by up to {misplaced}" in message
    assert "slices are missing" in message and "\n" not in message
    result = array_predictor().predict_files([kept, real_data("totalsegmentator/example_ct_dicom")], tmp_path / "o")
    assert result.done == ["example_ct_dicom"] and list(result.failed) == ["series"]  # the intact one goes on
    assert result.report["cases"]["series"]["kind"] == "refused"


@pytest.mark.parametrize("positions, numbers, accepted", [
    ([2.5 * k for k in range(8)], None, True),  # even
    ([2.5 * k + 0.05 * (-1) ** k for k in range(8)], None, True),  # rounding in the headers
    ([2.5 * k for k in range(8)], [1, 2, 5, 6, 7, 9, 10, 11], True),  # instance numbers skip, positions do not
    ([0, 2, 4, 6, 8, 14, 16, 18], None, False),  # two slices missing
    ([0, 2, 4, 7, 8, 10, 12, 14], None, False),  # the count is right for 2 mm, one position is not
    ([0, 2, 4, 6, 6, 8, 10, 12], None, False),  # two slices at one position: two acquisitions mixed
])
def test_slice_positions_decide_not_their_count(tmp_path, positions, numbers, accepted):
    write_dicom_series(tmp_path / "s", "1.2.3.7", len(positions), "x", positions_mm=positions,
                       instance_numbers=numbers)
    if accepted:
        image = read_image(tmp_path / "s")
        assert image.GetSize()[2] == 8
        assert image.GetSpacing()[2] == pytest.approx((positions[-1] - positions[0]) / 7, abs=0.02)
    else:
        with pytest.raises(InputRefused, match="slice positions are not evenly spaced"):
            read_image(tmp_path / "s")


# ------------------------------------------------------------------------------------------------ sform / qform
QFORM = np.array([[-1.6, 0, 0, 40.0], [0, -1.4, 0, 30.0], [0, 0, 3.0, -50.0], [0, 0, 0, 1]])


def shifted(affine: np.ndarray, mm: float = 30.0) -> np.ndarray:
    out = affine.copy()
    out[0, 3] += mm
    return out


def flipped_x(affine: np.ndarray, size_x: int) -> np.ndarray:
    """The same voxel centres' extent, the x index axis running the other way."""
    out = affine.copy()
    out[:3, 3] = affine[:3, :3] @ [size_x - 1, 0, 0] + affine[:3, 3]
    out[:3, 0] = -affine[:3, 0]
    return out


def nifti(path: Path, qform: np.ndarray, sform: np.ndarray, qform_code: int = 1, sform_code: int = 2) -> Path:
    data = sitk.GetArrayFromImage(body_ct()).transpose(2, 1, 0)  # nibabel's (x, y, z)
    image = nib.Nifti1Image(data, None)
    image.set_qform(qform, code=qform_code)
    image.set_sform(sform, code=sform_code)
    nib.save(image, str(path))
    return path


def nibabel_predictor() -> FlareCascadePredictor:
    """Models whose plans read with nnU-Net's NibabelIOWithReorient, as FlarePlans' do."""
    locator = Phase(ArrayLocator(), NORM, SMALL["locator_size"], None, 2)
    organs = Phase(ArrayOrganNet(), NORM, SMALL["organ_patch_size"], SMALL["organ_spacing"], NUM_CLASSES,
                   reader="NibabelIOWithReorient")
    return FlareCascadePredictor(locator, organs, CascadeSettings(min_component_side=SMALL["min_component_side"],
                                                                  margin_mm=SMALL["margin_mm"], progress=False))


def predicted(predictor: FlareCascadePredictor, path: Path, out: Path) -> tuple[nib.Nifti1Image, dict]:
    result = predictor.predict_files([path], out)
    assert result.done, result.failed
    name = path.name[: -len(".nii.gz")]
    return nib.load(str(out / f"{name}.nii.gz")), result.report["cases"][name]


@pytest.mark.parametrize("predictor, sform_code, used", [(nibabel_predictor, 2, "sform"),
                                                          (array_predictor, 2, "qform"),
                                                          (array_predictor, 1, "sform")])
def test_disagreeing_sform_and_qform_warn_name_the_one_used_and_both_are_carried(tmp_path, predictor, sform_code,
                                                                                 used):
    """The sform 30 mm off the qform. nibabel (nnU-Net's NibabelIO, FSL) takes the sform; ITK takes the qform unless
    the sform's code is 1 (scanner)."""
    path = nifti(tmp_path / "ct.nii.gz", QFORM, shifted(QFORM), sform_code=sform_code)
    labels, entry = predicted(predictor(), path, tmp_path / "out")
    warning = next(w for w in entry["warnings"] if "disagree" in w)
    assert f"used the {used}" in warning and "30.0 mm" in warning
    source = nib.load(str(path))
    for get in ("get_qform", "get_sform"):  # every viewer puts the labels where it puts the CT
        (a, a_code), (b, b_code) = getattr(labels.header, get)(coded=True), getattr(source.header, get)(coded=True)
        np.testing.assert_allclose(a, b, atol=1e-4)
        assert a_code == b_code
    np.testing.assert_allclose(labels.affine, source.affine, atol=1e-4)  # nibabel's reading of both
    by_itk = sitk.ReadImage(str(tmp_path / "out" / "ct.nii.gz"))
    ct_by_itk = sitk.ReadImage(str(path))
    assert np.allclose(by_itk.GetOrigin(), ct_by_itk.GetOrigin(), atol=1e-3)  # and ITK's
    assert predictor().predict_files([path], tmp_path / "out").skipped == ["ct"]  # the record is in it too


def test_the_models_reader_decides_which_transform_the_labels_come_from(tmp_path):
    """An sform that flips x against the qform: the labels equal those of the file holding only the transform the
    models' reader takes, voxel for voxel."""
    size_x = body_ct().GetSize()[0]
    sform = flipped_x(QFORM, size_x)
    both = nifti(tmp_path / "both.nii.gz", QFORM, sform)
    only_s = nifti(tmp_path / "only_s.nii.gz", sform, sform)
    only_q = nifti(tmp_path / "only_q.nii.gz", QFORM, QFORM)
    for make, reference in ((nibabel_predictor, only_s), (array_predictor, only_q)):
        got, _ = predicted(make(), both, tmp_path / f"out_{make.__name__}")
        expected, _ = predicted(make(), reference, tmp_path / f"ref_{make.__name__}")
        np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(expected.dataobj))
    a = np.asarray(predicted(nibabel_predictor(), both, tmp_path / "n")[0].dataobj)
    b = np.asarray(predicted(array_predictor(), both, tmp_path / "i")[0].dataobj)
    assert (a != b).any()  # the flip matters to the (orientation-dependent) network: the choice is real


def test_agreeing_transforms_warn_nothing(tmp_path):
    path = nifti(tmp_path / "ct.nii.gz", QFORM, QFORM)
    _, entry = predicted(nibabel_predictor(), path, tmp_path / "out")
    assert not any("disagree" in w for w in entry["warnings"])
    assert os.path.getsize(tmp_path / "out" / "ct.nii.gz") > 0
