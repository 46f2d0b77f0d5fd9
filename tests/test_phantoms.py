"""Phantom generator: determinism, labels, geometry, anatomy in physical space, and the nnU-Net raw dataset."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_flare.inference.inputs.checks import MAX_SPACING_MM, check_geometry
from nnunetv2_flare.labels import FLARE_ORGANS, dataset_json_labels
from nnunetv2_flare.phantoms import make_phantom, make_phantom_arrays, write_phantom_dataset
from nnunetv2_flare.phantoms.anatomy import clear_of
from nnunetv2_flare.phantoms.cli import main as make_phantoms_main
from nnunetv2_flare.phantoms.generator import Randomisation, _fine_to_coarse, _interpolate_axis, _upsample
from nnunetv2_flare.phantoms.painter import KEEP, Painter, catmull_rom
from nnunetv2_flare.phantoms.scan import MIN_SCALE, SHAPES, Scan
from nnunetv2_flare.phantoms.tissues import NUM_TISSUES, SYNTHETIC_HU_RANGE, T, randomise_tissue_table

LIVER, R_KIDNEY, SPLEEN, PANCREAS, AORTA, IVC, R_ADRENAL, L_ADRENAL, GALLBLADDER, ESOPHAGUS, STOMACH, DUODENUM, \
    L_KIDNEY = range(1, 14)


def physical_centroid(label: sitk.Image, organ: int) -> np.ndarray:
    """Centroid of an organ in physical (LPS) mm: x to the patient's left, y to the back, z to the head."""
    index_zyx = np.argwhere(sitk.GetArrayViewFromImage(label) == organ).mean(axis=0)
    return np.array(label.TransformContinuousIndexToPhysicalPoint(tuple(float(i) for i in index_zyx[::-1])))


def test_same_seed_gives_identical_arrays_and_headers():
    a, b = make_phantom_arrays(11, "tiny"), make_phantom_arrays(11, "tiny")
    assert a.image.tobytes() == b.image.tobytes() and a.label.tobytes() == b.label.tobytes()
    assert (a.spacing, a.origin, a.direction, a.info) == (b.spacing, b.origin, b.direction, b.info)
    c = make_phantom_arrays(12, "tiny")
    assert c.image.shape != a.image.shape or not np.array_equal(c.image, a.image)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_field_of_view_holds_all_13_organs_with_plausible_hu(seed):
    phantom = make_phantom_arrays(seed, "small", fov="abdomen")
    assert phantom.image.dtype == np.int16 and phantom.label.dtype == np.uint8
    assert phantom.image.shape == phantom.label.shape
    assert set(np.unique(phantom.label)) == set(range(14)), \
        f"missing organs: {set(range(14)) - set(np.unique(phantom.label))}"
    image, label = phantom.image, phantom.label
    assert image.min() >= -3024 and image.max() <= 3071
    assert (image <= -900).mean() > 0.05  # air around the patient
    assert ((image > -150) & (image < -50)).mean() > 0.02  # fat
    assert (image > 400).sum() > 50  # bone
    liver_hu = float(np.median(image[label == LIVER]))
    assert 20 < liver_hu < 200
    # intensity alone does not separate the organs: liver and spleen, pancreas and duodenum overlap
    for a, b in ((LIVER, SPLEEN), (PANCREAS, DUODENUM)):
        qa, qb = (np.percentile(image[label == o], [10, 90]) for o in (a, b))
        assert qa[0] < qb[1] and qb[0] < qa[1], f"{FLARE_ORGANS[a]} {qa} vs {FLARE_ORGANS[b]} {qb}"


def test_scan_geometry_stays_in_clinical_ranges():
    rng = np.random.default_rng(0)
    fovs, flips = set(), set()
    for _ in range(300):
        scan = Scan.sample(rng, body_half_width=rng.uniform(140, 230), z_scale=rng.uniform(0.88, 1.12))
        assert 0.6 <= scan.spacing[0] == scan.spacing[1] <= 1.0
        assert 1.0 <= scan.spacing[2] <= 5.0
        assert 40 <= scan.size[2] <= 600 and tuple(scan.size[:2]) == (512, 512)
        spacing, origin, direction = scan.header()
        assert set(np.abs(direction)) == {0.0, 1.0} and np.allclose(np.abs(np.reshape(direction, (3, 3))), np.eye(3))
        fovs.add(scan.fov)
        flips.add(scan.flips)
    assert fovs == {"upper_abdomen", "abdomen", "abdomen_pelvis", "chest_abdomen_pelvis"}
    assert len(flips) >= 4  # LPS-like, RAS-like and slice-order flips all occur


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shape_keeps_its_voxels_within_what_the_cascade_reads(shape):
    """Scaled-down grids draw only slice thicknesses that stay within nnUNetv2_flare_predict's limit; at "small"
    (the demo's) and larger nothing is left out, so those phantoms are the ones every earlier version made."""
    scale = SHAPES[shape]
    rng = np.random.default_rng(3)
    thickest = 0.0
    for i in range(300):
        body_half_width, z_scale = rng.uniform(140, 230), rng.uniform(0.88, 1.12)
        full = Scan.sample(np.random.default_rng(i), body_half_width, z_scale)
        scaled = Scan.sample(np.random.default_rng(i), body_half_width, z_scale, scale)
        assert scaled.spacing.max() <= MAX_SPACING_MM
        thickest = max(thickest, float(scaled.spacing[2]))
        if scale >= SHAPES["small"]:
            np.testing.assert_allclose(scaled.spacing, full.spacing / scale)
    assert thickest == min(5.0 / scale, MAX_SPACING_MM)  # the limit is reached, not undercut


def test_tiny_phantoms_with_the_thickest_slices_pass_the_cascade_input_check():
    seeds = [s for s in range(40) if make_phantom_arrays(s, "tiny").spacing[2] == MAX_SPACING_MM][:2]
    assert seeds, "no tiny phantom drew the thickest slices allowed"
    for seed in seeds:
        image, _ = make_phantom(seed, "tiny")
        check_geometry(image, f"tiny phantom {seed}")  # raises InputRefused beyond the limit


def test_the_smallest_scale_makes_every_field_of_view_and_a_smaller_one_is_refused():
    for fov in ("upper_abdomen", "chest_abdomen_pelvis"):  # the shortest and the longest scan
        assert make_phantom_arrays(0, MIN_SCALE, fov=fov).spacing[2] <= MAX_SPACING_MM
    with pytest.raises(ValueError, match="slices thicker than 20 mm.* use a scale of at least 0.05"):
        make_phantom_arrays(0, 0.04)


def test_full_size_case_geometry_and_label_grid():
    image, label = make_phantom(5, 1.0, fov="upper_abdomen")
    assert image.GetSize()[:2] == (512, 512) and 40 <= image.GetSize()[2] <= 600
    assert 0.6 <= image.GetSpacing()[0] <= 1.0 and 1.0 <= image.GetSpacing()[2] <= 5.0
    assert image.GetPixelID() == sitk.sitkInt16 and label.GetPixelID() == sitk.sitkUInt8
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(image, getter)() == getattr(label, getter)()


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_anatomy_is_right_in_physical_space_for_every_header(seed):
    for flips in ((False, False, False), (True, True, False), (True, False, True)):
        _, label = make_phantom(seed, "small", fov="abdomen", flips=flips)
        c = {organ: physical_centroid(label, organ) for organ in FLARE_ORGANS}
        x, y, z = 0, 1, 2  # LPS: +x = patient's left, +y = posterior, +z = superior
        assert c[LIVER][x] < c[SPLEEN][x]
        assert c[R_KIDNEY][x] < c[AORTA][x] < c[L_KIDNEY][x]
        assert c[R_ADRENAL][x] < c[L_ADRENAL][x]
        assert c[IVC][x] < c[AORTA][x]  # IVC on the patient's right of the aorta
        assert c[GALLBLADDER][x] < c[AORTA][x] < c[STOMACH][x]
        assert c[R_KIDNEY][y] > c[PANCREAS][y] and c[L_KIDNEY][y] > c[STOMACH][y]  # kidneys behind
        assert c[R_ADRENAL][z] > c[R_KIDNEY][z] and c[L_ADRENAL][z] > c[L_KIDNEY][z]  # adrenals above
        assert c[LIVER][z] > c[R_KIDNEY][z] and c[ESOPHAGUS][z] > c[STOMACH][z] > c[DUODENUM][z]


def test_flipped_header_with_flipped_array_is_the_same_patient():
    lps = make_phantom_arrays(8, "tiny", fov="abdomen", flips=(False, False, False))
    ras = make_phantom_arrays(8, "tiny", fov="abdomen", flips=(True, True, True))
    assert np.array_equal(ras.image, lps.image[::-1, ::-1, ::-1])
    assert np.array_equal(ras.label, lps.label[::-1, ::-1, ::-1])
    lps_image, _ = lps.to_sitk()
    ras_image, _ = ras.to_sitk()
    size = np.array(lps_image.GetSize())
    for index in ((0, 0, 0), (3, 5, 2), tuple(int(n) - 1 for n in size)):
        mirrored = tuple(int(i) for i in size - 1 - np.array(index))
        assert np.allclose(lps_image.TransformIndexToPhysicalPoint(index),
                           ras_image.TransformIndexToPhysicalPoint(mirrored), atol=1e-3)


def test_linear_upsampling_matches_interpolation_at_the_block_centres():
    coarse = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    fine_shape, factors = (8, 15, 11), np.array([2, 3, 2])
    expected = coarse
    for axis in range(3):
        expected = _interpolate_axis(expected, axis, _fine_to_coarse(fine_shape[axis], int(factors[axis])))
    assert np.allclose(_upsample(coarse, fine_shape, factors, linear=True), expected, atol=1e-6)
    nearest = _upsample(coarse, fine_shape, factors, linear=False)
    z, y, x = np.indices(fine_shape)
    assert np.array_equal(nearest, coarse[z // 2, y // 3, x // 2])  # each fine voxel takes its block's value


@pytest.mark.slow
def test_writes_an_nnunet_raw_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    make_phantoms_main(["-d", "987", "-n", "2", "-t", "1", "--seed", "4", "--shape", "tiny"])
    folder = tmp_path / "raw" / "Dataset987_FlarePhantoms"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["labels"] == dataset_json_labels()
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["phantom_0000_0000.nii.gz",
                                                                       "phantom_0001_0000.nii.gz"]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["phantom_0000.nii.gz", "phantom_0001.nii.gz"]
    assert [p.name for p in (folder / "imagesTs").iterdir()] == ["phantomTs_0000_0000.nii.gz"]
    assert [p.name for p in (folder / "labelsTs").iterdir()] == ["phantomTs_0000.nii.gz"]

    # same seed elsewhere: identical files' contents; the test case differs from every training case
    other = write_phantom_dataset(987, 2, 1, seed=4, output_folder=tmp_path / "again", scale="tiny", progress=False)
    read = lambda p: sitk.GetArrayFromImage(sitk.ReadImage(str(p)))  # noqa: E731
    for name in ("imagesTr/phantom_0001_0000.nii.gz", "labelsTr/phantom_0001.nii.gz"):
        assert np.array_equal(read(folder / name), read(other / name))
    test_image = read(folder / "imagesTs/phantomTs_0000_0000.nii.gz")
    for name in ("phantom_0000_0000.nii.gz", "phantom_0001_0000.nii.gz"):
        train_image = read(folder / "imagesTr" / name)
        assert train_image.shape != test_image.shape or not np.array_equal(train_image, test_image)

    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(str(folder), num_processes=1)


def test_missing_nnunet_raw_says_what_to_do(monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    assert make_phantoms_main(["-d", "1", "-n", "1", "--shape", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "nnUNet_raw is not set" in err and len(err.strip().splitlines()) == 1


def test_a_tube_pushed_clear_of_another_keeps_the_gap_and_its_course_elsewhere():
    aorta = np.array([[0.0, 0, 300], [0, 0, 150], [0, 0, 0]])
    aorta_radii = np.array([14.0, 12, 10])
    # an "esophagus" running straight through the aorta's axis between z = 200 and 100, far from it at the ends
    crossing = np.array([[-60.0, 0, 300], [-30, 0, 220], [0, 0, 150], [30, 0, 80], [60, 0, 0]])
    samples, position = clear_of(crossing, 8.0, aorta, aorta_radii, gap_mm=2.0)
    aorta_samples, aorta_sample_radii = catmull_rom(aorta, aorta_radii, 2.0)
    distance = np.linalg.norm(samples[:, None] - aorta_samples[None], axis=2)
    assert (distance - aorta_sample_radii[None] - 8.0).min() >= 2.0 - 1e-6
    untouched, _ = catmull_rom(crossing, np.arange(len(crossing), dtype=float), 2.0)
    far = np.linalg.norm(untouched[:, :2], axis=1) > 40
    np.testing.assert_allclose(samples[far], untouched[far])  # only the part that collided moved
    np.testing.assert_allclose(samples[:, 2], untouched[:, 2])  # sideways only
    moved = ~np.all(np.isclose(samples, untouched), axis=1)
    # through the axis: to the front
    assert moved.any() and (samples[moved & (np.abs(untouched[:, 0]) < 1), 1] < 0).all()
    assert position[0] == 0 and position[-1] == len(crossing) - 1 and np.all(np.diff(position) >= 0)


@pytest.mark.parametrize("seed", range(6))
def test_the_esophagus_never_paints_over_the_aorta(seed, monkeypatch):
    # the template's esophagus ran within ~11 mm of the aorta's axis above the hiatus: every case lost aorta voxels
    # to it (5 % on average, up to 13 %), leaving an aortic crescent around the esophagus
    taken = []
    apply = Painter.apply

    def recording_apply(self, box, mask, tissue, label=KEEP, **kwargs):
        if label == ESOPHAGUS:
            taken.append(int((mask & (self.label[box] == AORTA)).sum()))
        return apply(self, box, mask, tissue, label, **kwargs)

    monkeypatch.setattr(Painter, "apply", recording_apply)
    phantom = make_phantom_arrays(seed, "tiny", fov="chest_abdomen_pelvis")
    assert taken and sum(taken) == 0
    assert (phantom.label == ESOPHAGUS).any() and (phantom.label == AORTA).any()


def test_randomisation_is_seeded_and_leaves_the_realistic_phantom_alone():
    plain = make_phantom_arrays(5, "tiny")
    assert np.array_equal(plain.image, make_phantom_arrays(5, "tiny", randomisation=Randomisation()).image)
    both = Randomisation(truncated_fov=1.0, synthetic_contrast=1.0)
    a, b = make_phantom_arrays(5, "tiny", randomisation=both), make_phantom_arrays(5, "tiny", randomisation=both)
    assert a.image.tobytes() == b.image.tobytes() and a.label.tobytes() == b.label.tobytes()
    assert a.info["truncated_fov"] and a.info["synthetic_contrast"]
    assert not plain.info["truncated_fov"] and not plain.info["synthetic_contrast"]
    with pytest.raises(ValueError, match="probability"):
        Randomisation(synthetic_contrast=1.5)


def test_a_truncated_field_of_view_cuts_the_flanks_but_keeps_the_patient_and_slices():
    plain = make_phantom_arrays(2, "small", fov="abdomen")
    cut = make_phantom_arrays(2, "small", fov="abdomen", randomisation=Randomisation(truncated_fov=1.0))
    assert cut.image.shape[0] == plain.image.shape[0]  # same slices
    assert cut.image.shape[2] < plain.image.shape[2] and cut.image.shape[1] <= plain.image.shape[1]
    assert cut.spacing == plain.spacing and cut.info["circle_padding"] is None
    body = cut.image > -500
    assert body[:, :, 0].mean() > 0.3 and body[:, :, -1].mean() > 0.3  # the patient runs off both sides
    assert set(np.unique(cut.label)) >= {LIVER, SPLEEN, R_KIDNEY, L_KIDNEY, AORTA}


def test_synthetic_contrast_changes_the_ct_numbers_not_the_anatomy():
    plain = make_phantom_arrays(3, "small", fov="abdomen")
    synthetic = make_phantom_arrays(3, "small", fov="abdomen", randomisation=Randomisation(synthetic_contrast=1.0))
    assert np.array_equal(plain.label, synthetic.label)
    means = {o: (float(plain.image[plain.label == o].mean()), float(synthetic.image[synthetic.label == o].mean()))
             for o in (LIVER, SPLEEN, R_KIDNEY, AORTA)}
    assert max(abs(p - s) for p, s in means.values()) > 30, means
    mean, amplitude = np.zeros(NUM_TISSUES, np.float32), np.ones(NUM_TISSUES, np.float32)
    mean[T.BONE_CORTICAL] = 900
    randomise_tissue_table(np.random.default_rng(0), mean, amplitude)
    low, high = SYNTHETIC_HU_RANGE
    assert all(low <= mean[t] <= high for t in (T.LIVER, T.SPLEEN, T.KIDNEY_CORTEX, T.FAT, T.ARTERY))
    assert mean[T.BONE_CORTICAL] == 900 and mean[T.AIR] == 0  # bone and air keep their values
    assert len({round(float(mean[t])) for t in (T.LIVER, T.SPLEEN, T.KIDNEY_CORTEX, T.PANCREAS)}) == 4


@pytest.mark.slow
def test_only_training_cases_are_randomised_and_the_dataset_says_how(tmp_path):
    assert make_phantoms_main(["-d", "986", "-n", "3", "-t", "2", "--shape", "tiny", "-o", str(tmp_path),
                               "--truncated_fov", "1", "--synthetic_contrast", "1"]) == 0
    folder = tmp_path / "Dataset986_FlarePhantoms"
    cases = {c["case"]: c for c in json.loads((folder / "phantom_cases.json").read_text())}
    assert all(cases[f"phantom_{i:04d}"]["synthetic_contrast"] and cases[f"phantom_{i:04d}"]["truncated_fov"]
               for i in range(3))
    assert not any(cases[f"phantomTs_{i:04d}"]["synthetic_contrast"] or cases[f"phantomTs_{i:04d}"]["truncated_fov"]
                   for i in range(2))
    settings = json.loads((folder / "dataset.json").read_text())["phantom_settings"]
    assert settings["training_randomisation"] == {"truncated_fov": 1.0, "synthetic_contrast": 1.0}


def test_a_probability_outside_0_1_is_refused_before_anything_is_written(tmp_path, capsys):
    assert make_phantoms_main(["-d", "985", "-n", "1", "-o", str(tmp_path), "--synthetic_contrast", "2"]) == 2
    assert "probability" in capsys.readouterr().err and not any(tmp_path.iterdir())
