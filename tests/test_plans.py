"""FlarePlans: the template filled from a dataset fingerprint, the training preprocessors of both phases, and the
rule that re-planning never silently changes the normalization statistics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tiny_dataset import write_tiny_dataset

DATASET_ID = 220


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """Tiny raw dataset, fingerprint and FlarePlans.json (no preprocessing), with nnU-Net's env vars set."""
    root = tmp_path_factory.mktemp("nnunet")
    raw = write_tiny_dataset(root / "raw", DATASET_ID, num_cases=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_raw", str(root / "raw"))
        mp.setenv("nnUNet_preprocessed", str(root / "preprocessed"))
        mp.setenv("nnUNet_results", str(root / "results"))
        from nnunetv2_flare.planning.plan_and_preprocess import plan_and_preprocess
        plans_file = plan_and_preprocess(DATASET_ID, num_processes=1, preprocess=False)
        yield {"root": root, "raw": raw, "plans_file": plans_file, "plans": json.loads(plans_file.read_text())}


def _plans_manager(plans_file: Path):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    return PlansManager(str(plans_file))


def _raw_cases(raw: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, label, spacing in array order) of every training case, read independently of nnU-Net."""
    cases = []
    for label_file in sorted((raw / "labelsTr").glob("*.nii.gz")):
        image = sitk.ReadImage(str(raw / "imagesTr" / label_file.name.replace(".nii.gz", "_0000.nii.gz")))
        label = sitk.ReadImage(str(label_file))
        cases.append((sitk.GetArrayFromImage(image).astype(np.float32), sitk.GetArrayFromImage(label),
                      np.array(image.GetSpacing()[::-1])))
    return cases


def test_plans_identifier_and_configurations(planned):
    plans = planned["plans"]
    assert planned["plans_file"].name == "FlarePlans.json"
    assert plans["plans_name"] == "FlarePlans"
    assert {"flare_locator", "flare_organs", "flare_organs_narrow"} <= set(plans["configurations"])
    assert plans["transpose_forward"] == [0, 1, 2] and plans["experiment_planner_used"] == "FlarePlanner"
    # nnU-Net's own commands (nnUNetv2_predict) must find everything the plans name inside nnunetv2
    pm = _plans_manager(planned["plans_file"])
    for name in ("flare_locator", "flare_organs", "flare_organs_narrow"):
        cm = pm.get_configuration(name)
        assert cm.preprocessor_class.__name__ == "DefaultPreprocessor"
        assert cm.resampling_fn_data.func.__name__ == "resample_torch_fornnunet"


def test_locator_configuration(planned):
    cm = _plans_manager(planned["plans_file"]).get_configuration("flare_locator")
    assert cm.patch_size == [128, 128, 128]
    assert cm.network_arch_class_name == "nnunetv2_flare.networks.FlareLocator"
    assert cm.normalization_schemes == ["CTNormalization"] and cm.use_mask_for_norm == [False]
    assert cm.configuration["flare_training_preprocessor"] == "FlareLocatorPreprocessor"
    # nominal spacing: median over cases of the spacing that maps the whole case to 128^3
    expected = np.median([sp * np.array(img.shape) / 128 for img, _, sp in _raw_cases(planned["raw"])], axis=0)
    np.testing.assert_allclose(cm.spacing, expected, rtol=1e-4)


def test_organ_configurations(planned):
    pm = _plans_manager(planned["plans_file"])
    organs, narrow = pm.get_configuration("flare_organs"), pm.get_configuration("flare_organs_narrow")
    assert organs.spacing == [2.0, 1.5, 1.5]  # 1.5 x 1.5 x 2 mm in (z, y, x)
    assert organs.patch_size == [96, 96, 96]
    assert organs.network_arch_class_name == "nnunetv2_flare.networks.FlareOrganNet"
    assert organs.normalization_schemes == ["CTNormalization"]
    assert organs.network_arch_init_kwargs["features_per_stage"] == [60, 120, 240, 480]
    assert planned["plans"]["configurations"]["flare_organs_narrow"]["inherits_from"] == "flare_organs"
    assert narrow.data_identifier == organs.data_identifier  # shares the preprocessed data
    assert (narrow.spacing, narrow.patch_size) == (organs.spacing, organs.patch_size)
    assert narrow.network_arch_init_kwargs["features_per_stage"] == [24, 48, 96, 192]
    assert narrow.network_arch_init_kwargs["head_dim"] == 24
    assert narrow.network_arch_init_kwargs["depths"] == organs.network_arch_init_kwargs["depths"]


def test_normalization_statistics_come_from_the_labelled_foreground(planned):
    stats = planned["plans"]["foreground_intensity_properties_per_channel"]["0"]
    fg = np.concatenate([img[lab > 0] for img, lab, _ in _raw_cases(planned["raw"])])
    assert stats["percentile_00_5"] <= np.median(fg) <= stats["percentile_99_5"]
    assert abs(stats["mean"] - fg.mean()) < 0.05 * fg.std()  # nnU-Net subsamples; close, not equal


@pytest.mark.parametrize("configuration, input_size", [("flare_locator", 64), ("flare_organs", 32),
                                                       ("flare_organs_narrow", 32)])
def test_networks_built_from_plans_match_the_deep_supervision_scales(planned, configuration, input_size):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    cm = _plans_manager(planned["plans_file"]).get_configuration(configuration)
    num_classes = 2 if configuration == "flare_locator" else 14
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 1, num_classes, deep_supervision=True)
    scales = 1 / np.cumprod(np.vstack(cm.pool_op_kernel_sizes), axis=0)[:-1]  # nnU-Net's formula
    torch.manual_seed(0)
    with torch.no_grad():
        outputs = net.eval()(torch.randn(1, 1, *(input_size,) * 3))
    assert len(outputs) == len(scales)
    for out, scale in zip(outputs, scales):
        assert list(out.shape[2:]) == [int(input_size * s) for s in scale]
        assert out.shape[1] == num_classes
    if configuration == "flare_organs":
        own = sum(p.numel() for n, p in net.named_parameters() if "ds_heads" not in n)
        assert own == 9_373_994  # the paper's Phase-2 network


def test_replanning_keeps_normalization_statistics_unless_asked(planned, capsys):
    from nnunetv2_flare.planning.flare_planner import FlarePlanner
    root = planned["root"]
    fingerprint_file = root / "preprocessed" / planned["plans_file"].parent.name / "dataset_fingerprint.json"
    original_fingerprint = fingerprint_file.read_text()
    original_stats = planned["plans"]["foreground_intensity_properties_per_channel"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_raw", str(root / "raw"))
        mp.setenv("nnUNet_preprocessed", str(root / "preprocessed"))
        try:
            # labels changed (e.g. pseudo-labels), fingerprint re-extracted: other statistics
            fingerprint = json.loads(original_fingerprint)
            fingerprint["foreground_intensity_properties_per_channel"]["0"]["mean"] += 123.0
            fingerprint_file.write_text(json.dumps(fingerprint))
            FlarePlanner(DATASET_ID).plan_experiment()
            kept = json.loads(planned["plans_file"].read_text())["foreground_intensity_properties_per_channel"]
            assert kept == original_stats
            assert "--overwrite_plans" in capsys.readouterr().out
            FlarePlanner(DATASET_ID, overwrite_plans=True).plan_experiment()
            replaced = json.loads(planned["plans_file"].read_text())["foreground_intensity_properties_per_channel"]
            assert replaced["0"]["mean"] == pytest.approx(original_stats["0"]["mean"] + 123.0)
        finally:
            fingerprint_file.write_text(original_fingerprint)
            FlarePlanner(DATASET_ID, overwrite_plans=True).plan_experiment()


def test_replanning_keeps_user_configurations(planned):
    from nnunetv2_flare.planning.flare_planner import FlarePlanner
    root = planned["root"]
    plans = json.loads(planned["plans_file"].read_text())
    plans["configurations"]["my_variant"] = {"inherits_from": "flare_organs", "batch_size": 2}
    planned["plans_file"].write_text(json.dumps(plans))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_raw", str(root / "raw"))
        mp.setenv("nnUNet_preprocessed", str(root / "preprocessed"))
        FlarePlanner(DATASET_ID).plan_experiment()
    assert json.loads(planned["plans_file"].read_text())["configurations"]["my_variant"]["batch_size"] == 2


def _preprocess_case(planned, configuration: str, case: int = 0):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from nnunetv2_flare.planning.preprocessors import training_preprocessor_class
    pm = _plans_manager(planned["plans_file"])
    cm = pm.get_configuration(configuration)
    raw = planned["raw"]
    label_file = sorted((raw / "labelsTr").glob("*.nii.gz"))[case]
    image_file = raw / "imagesTr" / label_file.name.replace(".nii.gz", "_0000.nii.gz")
    rw = SimpleITKIO()
    image, props = rw.read_images([str(image_file)])
    seg, _ = rw.read_seg(str(label_file))
    dataset_json = json.loads((raw / "dataset.json").read_text())
    preprocessor = training_preprocessor_class(cm.configuration)(verbose=False)
    data, pseg, props_out = preprocessor.run_case_npy(image.copy(), seg.copy(), dict(props), pm, cm, dataset_json)
    return pm, cm, image, seg, props, data, pseg, props_out, dataset_json


def test_locator_preprocessing_resizes_then_normalizes_and_binarizes(planned):
    from nnunetv2.preprocessing.resampling.resample_torch import resample_torch_fornnunet
    pm, cm, image, seg, props, data, pseg, out, _ = _preprocess_case(planned, "flare_locator")
    assert data.shape == pseg.shape == (1, 128, 128, 128)
    assert set(np.unique(pseg)) == {0, 1}
    assert out["shape_before_cropping"] == out["shape_after_cropping_and_before_resampling"] == image.shape[1:]
    assert out["bbox_used_for_cropping"] == [[0, s] for s in image.shape[1:]]
    np.testing.assert_allclose(np.array(out["flare_locator_spacing"]) * 128,
                               np.array(props["spacing"]) * np.array(image.shape[1:]), rtol=1e-6)
    # resize first, then nnU-Net's CT normalization (clip to the foreground percentiles, z-score)
    st = pm.foreground_intensity_properties_per_channel["0"]
    resized = resample_torch_fornnunet(image.astype(np.float32), [128] * 3, props["spacing"],
                                       out["flare_locator_spacing"], is_seg=False, force_separate_z=False)
    expected = (np.clip(resized, st["percentile_00_5"], st["percentile_99_5"]) - st["mean"]) / st["std"]
    np.testing.assert_allclose(data, expected, rtol=1e-4, atol=1e-4)
    # the other order gives different values where interpolation crosses the clipping bounds
    normalized_first = resample_torch_fornnunet(
        (np.clip(image.astype(np.float32), st["percentile_00_5"], st["percentile_99_5"]) - st["mean"]) / st["std"],
        [128] * 3, props["spacing"], out["flare_locator_spacing"], is_seg=False, force_separate_z=False)
    assert np.abs(normalized_first - data).max() > 0.1
    # abdomen = every organ voxel: the resized binary label covers about the same physical volume
    organ_fraction = (seg > 0).mean()
    assert abs(pseg.mean() - organ_fraction) < 0.1 * organ_fraction
    assert out["class_locations"][1].shape[0] > 0


def test_locator_export_restores_the_original_grid(planned):
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    from nnunetv2_flare.planning.abdomen_labels import abdomen_dataset_json
    pm, cm, image, seg, props, data, pseg, out, dataset_json = _preprocess_case(planned, "flare_locator", 1)
    logits = torch.from_numpy(np.concatenate([pseg == 0, pseg == 1]).astype(np.float32))
    restored = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, pm, cm, pm.get_label_manager(abdomen_dataset_json(dataset_json)), out)
    assert restored.shape == seg.shape[1:]
    reference = seg[0] > 0
    dice = 2 * (restored.astype(bool) & reference).sum() / (restored.astype(bool).sum() + reference.sum())
    assert dice > 0.95


def test_organ_preprocessing_crops_to_the_labelled_foreground(planned):
    pm, cm, image, seg, props, data, pseg, out, _ = _preprocess_case(planned, "flare_organs")
    margin_mm = cm.configuration["flare_foreground_margin_mm"]
    fg = np.argwhere(seg[0] > 0)
    for axis, (lo, hi) in enumerate(out["flare_foreground_bbox"]):
        margin = int(np.ceil(margin_mm / props["spacing"][axis]))
        assert lo == max(0, fg[:, axis].min() - margin)
        assert hi == min(seg.shape[axis + 1], fg[:, axis].max() + 1 + margin)
    assert out["shape_before_cropping"] == seg.shape[1:]
    crop_shape = [hi - lo for lo, hi in out["bbox_used_for_cropping"]]
    assert out["shape_after_cropping_and_before_resampling"] == tuple(crop_shape)
    expected_shape = np.round(np.array(crop_shape) * np.array(props["spacing"]) / np.array(cm.spacing))
    np.testing.assert_array_equal(data.shape[1:], expected_shape)
    assert set(np.unique(pseg[pseg >= 0])) == set(np.unique(seg))


def test_organ_export_pastes_the_crop_into_the_full_image(planned):
    """On a case already at the target spacing, one-hot 'logits' of the preprocessed label come back exactly."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    from nnunetv2_flare.planning.preprocessors import FlareOrganPreprocessor
    from tiny_dataset import synthetic_case
    pm = _plans_manager(planned["plans_file"])
    cm = pm.get_configuration("flare_organs")
    image, label = synthetic_case((48, 64, 64), cm.spacing, np.random.default_rng(3))
    label[:2] = 0  # nothing in the first slices: the crop must leave them out
    props = {"spacing": list(cm.spacing)}
    dataset_json = json.loads((planned["raw"] / "dataset.json").read_text())
    data, pseg, out = FlareOrganPreprocessor(verbose=False).run_case_npy(
        image[None], label[None].astype(np.int16), props, pm, cm, dataset_json)
    assert data.shape[1:] == tuple(hi - lo for lo, hi in out["bbox_used_for_cropping"])  # no resampling needed
    logits = torch.from_numpy(np.stack([(pseg[0] == c) for c in range(14)]).astype(np.float32))
    restored = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, pm, cm, pm.get_label_manager(dataset_json), out)
    assert restored.shape == label.shape
    np.testing.assert_array_equal(restored, label)


def test_non_ct_dataset_is_refused(tmp_path):
    from nnunetv2_flare.planning.plan_and_preprocess import plan_and_preprocess
    raw = write_tiny_dataset(tmp_path / "raw", 221, name="NotCT", num_cases=2, num_test_cases=0)
    dataset_json = json.loads((raw / "dataset.json").read_text())
    dataset_json["channel_names"] = {"0": "T1"}
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_raw", str(tmp_path / "raw"))
        mp.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
        with pytest.raises(ValueError, match="one CT channel"):
            plan_and_preprocess(221, num_processes=1, preprocess=False)


def test_missing_environment_is_explained(monkeypatch):
    from nnunetv2_flare.cli_errors import UsageError
    from nnunetv2_flare.planning.plan_and_preprocess import plan_and_preprocess
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(UsageError, match="nnUNet_raw"):
        plan_and_preprocess(DATASET_ID)


def test_unknown_configuration_is_refused(planned):
    from nnunetv2_flare.planning.plan_and_preprocess import plan_and_preprocess
    root = planned["root"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_raw", str(root / "raw"))
        mp.setenv("nnUNet_preprocessed", str(root / "preprocessed"))
        with pytest.raises(ValueError, match="flare_organs_narrow"):
            plan_and_preprocess(DATASET_ID, configurations=["3d_fullres"], num_processes=1)


def test_nifti_datasets_are_read_in_one_orientation(planned, tmp_path):
    """The plans read NIfTI with nnU-Net's NibabelIOWithReorient: a case stored with flipped axes (the same scan in
    physical space) gives the same training arrays in both phases, and nnU-Net's export writes a label back in the
    file's own voxel order (so its validation compares like with like)."""
    from nnunetv2_flare.inference.inputs.orientation import plan_reorientation, reoriented_image
    from nnunetv2_flare.planning.preprocessors import training_preprocessor_class
    assert planned["plans"]["image_reader_writer"] == "NibabelIOWithReorient"
    raw = planned["raw"]
    label_file = sorted((raw / "labelsTr").glob("*.nii.gz"))[0]
    image_file = raw / "imagesTr" / label_file.name.replace(".nii.gz", "_0000.nii.gz")
    flipped = {}
    for kind, source in (("image", image_file), ("label", label_file)):
        image = sitk.ReadImage(str(source))
        flipped[kind] = tmp_path / f"{kind}.nii.gz"
        sitk.WriteImage(reoriented_image(image, plan_reorientation(image, "RAI")), str(flipped[kind]))
        stored = sitk.GetArrayFromImage(sitk.ReadImage(str(flipped[kind])))
        assert not np.array_equal(stored, sitk.GetArrayFromImage(image))  # the test can fail: x, y, z are flipped
    pm = _plans_manager(planned["plans_file"])
    dataset_json = json.loads((raw / "dataset.json").read_text())
    for configuration in ("flare_locator", "flare_organs"):
        cm = pm.get_configuration(configuration)
        preprocessor = training_preprocessor_class(cm.configuration)(verbose=False)
        data, seg, _ = preprocessor.run_case([str(image_file)], str(label_file), pm, cm, dataset_json)
        data_f, seg_f, _ = preprocessor.run_case([str(flipped["image"])], str(flipped["label"]), pm, cm,
                                                 dataset_json)
        np.testing.assert_allclose(data_f, data, atol=1e-5)
        np.testing.assert_array_equal(seg_f, seg)
    rw = pm.image_reader_writer_class()
    canonical, properties = rw.read_seg(str(flipped["label"]))
    rw.write_seg(canonical[0], str(tmp_path / "exported.nii.gz"), properties)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "exported.nii.gz"))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(flipped["label"]))))


def test_a_dataset_json_reader_choice_is_kept(tmp_path):
    from nnunetv2_flare.planning.plan_and_preprocess import plan_and_preprocess
    raw = write_tiny_dataset(tmp_path / "raw", 222, name="OwnReader", num_cases=2, num_test_cases=0)
    dataset_json = json.loads((raw / "dataset.json").read_text())
    dataset_json["overwrite_image_reader_writer"] = "SimpleITKIO"
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_raw", str(tmp_path / "raw"))
        mp.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
        plans_file = plan_and_preprocess(222, num_processes=1, preprocess=False)
    assert json.loads(plans_file.read_text())["image_reader_writer"] == "SimpleITKIO"
