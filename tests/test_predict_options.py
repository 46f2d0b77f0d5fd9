"""nnUNetv2_flare_predict's nnU-Net and TotalSegmentator options, through the CLI on the real CTs of
../shared/data/real with tiny random-weight model folders (several folds). One module-scoped model set and input
folder are shared by all tests; OpenVINO converts each model once (cached in the model folders)."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cascade_oracles import SMALL_CASCADE, real_data
from nnunetv2_flare.inference.cli.predict import build_parser, main
from nnunetv2_flare.phantoms import make_phantom
from tool_modules import load_tool

write_random_cascade = load_tool("random_models").write_random_cascade

REAL_CASES = {  # case name -> file or DICOM folder under ../shared/data/real
    "example_ct": "totalsegmentator/example_ct.nii.gz",
    "example_ct_sm": "totalsegmentator/example_ct_sm.nii.gz",
    "example_ct_dicom": "totalsegmentator/example_ct_dicom",
    "3Dircadb1.1_PATIENT_DICOM": "3dircadb/3Dircadb1.1_PATIENT_DICOM.nii.gz",
    "TCGA-09-2043_CEAxial3.0WITH_CE_z056-159": "tcga-ov/TCGA-09-2043_CEAxial3.0WITH_CE_z056-159.nii.gz",
}
QUIET = ["--disable_progress_bar", "--threads", "1"]  # 1 thread: torch's 2 threads crawl on a shared 2-core host


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Locator and organ model folders with folds all, 0 and 1 (different random weights per fold)."""
    folder = tmp_path_factory.mktemp("results")
    for seed_offset, fold in enumerate(("all", 0, 1)):
        locator, organs = write_random_cascade(folder, "Dataset220_FLARE", tiny=True, fold=fold,
                                               seed_offset=10 * seed_offset, **SMALL_CASCADE)
    return {"locator": locator, "organs": organs}


def model_args(models: dict[str, Path]) -> list[str]:
    return ["-m1", str(models["locator"]), "-m2", str(models["organs"])]


@pytest.fixture(scope="module")
def real_inputs(tmp_path_factory) -> Path:
    """A folder of links to the real CTs (never copies): NIfTI files and the DICOM series folder."""
    folder = tmp_path_factory.mktemp("real_inputs")
    for name, relative in REAL_CASES.items():
        source = real_data(relative)
        (folder / (name if source.is_dir() else source.name)).symlink_to(source)
    return folder


def report_of(path: Path) -> dict:
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------ nnU-Net flags
PACKAGE_PARSERS = ["nnunetv2_flare.inference.cli.predict", "nnunetv2_flare.planning.plan_and_preprocess",
                   "nnunetv2_flare.phantoms.cli", "nnunetv2_flare.pseudolabel.cli"]


@pytest.mark.parametrize("module", PACKAGE_PARSERS)
def test_no_parser_reads_a_prefix_as_another_option(module):
    assert importlib.import_module(module).build_parser().allow_abbrev is False


def test_part_id_is_not_plans_and_short_nnunet_flags_mean_the_organ_network():
    args = build_parser().parse_args(["-i", "x", "-o", "y", "-part_id", "2", "-num_parts", "3", "-c", "narrow",
                                      "-tr", "MyTrainer"])
    assert (args.part_id, args.num_parts, args.p) == (2, 3, "FlarePlans")
    assert (args.c2, args.tr2, args.c1) == ("narrow", "MyTrainer", "flare_locator")
    args = build_parser().parse_args(["-i", "x", "-o", "y", "-c1", "loc", "-chk", "checkpoint_best.pth"])
    assert (args.c1, args.c2, args.chk) == ("loc", "flare_organs", "checkpoint_best.pth")
    with pytest.raises(SystemExit):  # a prefix is an error, never a silent other option
        build_parser().parse_args(["-i", "x", "-o", "y", "-part", "1"])


@pytest.mark.slow
@pytest.mark.real_data
def test_num_parts_3_predicts_every_real_case_exactly_once(models, real_inputs, tmp_path):
    out = tmp_path / "out"
    done: list[str] = []
    for part in range(3):
        report = tmp_path / f"report_{part}.json"
        assert main(["-i", str(real_inputs), "-o", str(out), *model_args(models), "-num_parts", "3", "-part_id",
                     str(part), "--report", str(report), *QUIET]) == 0
        cases = report_of(report)["cases"]
        assert all(entry["status"] == "done" for entry in cases.values())
        done += list(cases)
    assert sorted(done) == sorted(REAL_CASES)  # each case once, no part empty of work it should have
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.nii.gz" for name in REAL_CASES)
    assert [len(report_of(tmp_path / f"report_{k}.json")["cases"]) for k in range(3)] == [2, 2, 1]


@pytest.mark.slow
@pytest.mark.real_data
def test_bad_part_is_one_line_error(models, real_inputs, tmp_path, capsys):
    assert main(["-i", str(real_inputs), "-o", str(tmp_path / "o"), *model_args(models), "-num_parts", "3",
                 "-part_id", "3", *QUIET]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "-part_id must be in 0..2" in err


# ------------------------------------------------------------------------------------------------ fold ensembles
class MeanProbabilityOracle:
    """`x, grid -> labels`: torch networks of several folds built and loaded here, softmax per fold, mean, argmax
    (written independently of ensemble.py)."""

    def __init__(self, model_folder: Path, folds) -> None:
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        plans = json.loads((model_folder / "plans.json").read_text())
        architecture = next(iter(plans["configurations"].values()))["architecture"]
        n_classes = len(json.loads((model_folder / "dataset.json").read_text())["labels"])
        self.networks = []
        for fold in folds:
            net = get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"], [], 1,
                                         n_classes, allow_init=False, deep_supervision=False)
            weights = torch.load(model_folder / f"fold_{fold}" / "checkpoint_final.pth", weights_only=False)
            net.load_state_dict(weights["network_weights"])
            self.networks.append(net.eval())

    def __call__(self, x: np.ndarray, grid=None) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            mean = torch.stack([torch.softmax(net(t)[0].double(), 0) for net in self.networks]).mean(0)
            return mean.argmax(0).numpy().astype(np.uint8)


@pytest.mark.slow
@pytest.mark.real_data
def test_two_fold_ensemble_differs_from_each_fold_and_is_the_mean_probability_argmax(models, tmp_path):
    from cascade_oracles import predictor_from_networks
    from nnunetv2_flare.inference.models.loading import CTNormalization
    CT_INTENSITY_PROPERTIES = load_tool("random_models").CT_INTENSITY_PROPERTIES

    image = real_data("totalsegmentator/example_ct.nii.gz")
    outputs = {}
    for folds in (["0"], ["1"], ["0", "1"]):
        out = tmp_path / "_".join(folds)
        assert main(["-i", str(image), "-o", str(out), *model_args(models), "-f", *folds, "--backend", "torch",
                     *QUIET]) == 0
        outputs[tuple(folds)] = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "example_ct.nii.gz")))
    ensemble = outputs[("0", "1")]
    assert ensemble.any()
    for single in (("0",), ("1",)):
        assert (ensemble != outputs[single]).mean() > 0.01  # a real change, not a few near-tie voxels
    norm = CTNormalization.from_intensity_properties(CT_INTENSITY_PROPERTIES)
    oracle = predictor_from_networks(
        MeanProbabilityOracle(models["locator"], (0, 1)), MeanProbabilityOracle(models["organs"], (0, 1)), norm,
        norm, locator_size=SMALL_CASCADE["locator_size"], organ_patch_size=SMALL_CASCADE["organ_patch_size"],
        organ_spacing=SMALL_CASCADE["organ_spacing"], progress=False)
    expected = sitk.GetArrayFromImage(oracle.predict(image))
    np.testing.assert_array_equal(ensemble, expected)


@pytest.mark.slow
@pytest.mark.real_data
def test_openvino_ensemble_of_logits_graphs_agrees_with_torch(models, tmp_path):
    image = real_data("totalsegmentator/example_ct_sm.nii.gz")
    labels = {}
    for backend in ("torch", "openvino"):
        assert main(["-i", str(image), "-o", str(tmp_path / backend), *model_args(models), "-f", "0", "1",
                     "--backend", backend, "--report", str(tmp_path / f"{backend}.json"), *QUIET]) == 0
        labels[backend] = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / backend / "example_ct_sm.nii.gz")))
    assert (labels["torch"] == labels["openvino"]).mean() > 0.99  # random weights leave a few near-ties
    cached = [p.name for p in (models["organs"] / "fold_1" / "openvino").glob("*.xml")]
    assert any(name.endswith("_logits.xml") for name in cached)


# ------------------------------------------------------------------------------------------------ tiles and TTA
@pytest.mark.slow
@pytest.mark.real_data
def test_step_size_overlaps_tiles_and_tta_flags(models, tmp_path, capsys):
    image = str(real_data("totalsegmentator/example_ct_sm.nii.gz"))
    runs = {"default": [], "step_1": ["-step_size", "1"], "step_half": ["-step_size", "0.5", "--disable_tta"],
            "tta": ["--tta"], "shift_tta": ["--shift_tta"]}
    labels, reports = {}, {}
    for name, extra in runs.items():
        report = tmp_path / f"{name}.json"
        assert main(["-i", image, "-o", str(tmp_path / name), *model_args(models), "--backend", "torch",
                     "--report", str(report), *extra, *QUIET]) == 0
        reports[name] = report_of(report)
        labels[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name / "example_ct_sm.nii.gz")))
    case = {name: r["cases"]["example_ct_sm"] for name, r in reports.items()}
    np.testing.assert_array_equal(labels["step_1"], labels["default"])  # 1: the fewest tiles, today's default
    assert case["step_half"]["n_patches"] > case["default"]["n_patches"]
    assert reports["step_half"]["settings"]["tile_min_overlap"] == 0.5
    assert reports["tta"]["settings"]["tta"] is True and reports["default"]["settings"]["tta"] is False
    assert (labels["tta"] != labels["default"]).any()  # 8 mirrored passes averaged: another answer
    assert reports["shift_tta"]["settings"]["shift_tta"] is True and \
        reports["default"]["settings"]["shift_tta"] is False
    assert reports["shift_tta"]["settings"]["tta"] is False
    assert (labels["shift_tta"] != labels["default"]).any()  # 8 shifted passes averaged: another answer
    help_text = build_parser().format_help()
    assert "already off" in help_text and "-step_size" in help_text
    for bad in (["-step_size", "0"], ["--tta", "--disable_tta"], ["--shift_tta", "--disable_tta"]):
        assert main(["-i", image, "-o", str(tmp_path / "bad"), *model_args(models), *bad, *QUIET]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------ clinical outputs
DICOM_SERIES = "totalsegmentator/example_ct_dicom"


@pytest.fixture(scope="module")
def dicom_run(models, tmp_path_factory) -> dict:
    """One CLI run on the real DICOM series with every output option, into a single named file."""
    folder = tmp_path_factory.mktemp("dicom_run")
    target, report = folder / "seg.nii.gz", folder / "report.json"
    assert main(["-i", str(real_data(DICOM_SERIES)), "-o", str(target), *model_args(models), "--output_type",
                 "dicom_seg", "--preview", "--split_masks", "--color_table", "--statistics", "--report", str(report),
                 *QUIET]) == 0
    labels = sitk.ReadImage(str(target))
    return {"folder": folder, "target": target, "labels": labels, "array": sitk.GetArrayFromImage(labels),
            "report": report_of(report)}


def present_organs(array: np.ndarray) -> dict[int, str]:
    from nnunetv2_flare.labels import FLARE_ORGANS
    return {int(v): FLARE_ORGANS[int(v)] for v in np.unique(array) if v}


@pytest.mark.slow
@pytest.mark.real_data
def test_output_file_for_a_single_input_and_its_neighbours(dicom_run, models, tmp_path, capsys):
    folder = dicom_run["folder"]
    assert sorted(p.name for p in folder.iterdir()) == ["report.json", "seg", "seg.ctbl", "seg.dcm", "seg.nii.gz",
                                                        "seg.png"]
    assert dicom_run["labels"].GetSize() == (512, 512, 20) and len(present_organs(dicom_run["array"])) >= 3
    entry = dicom_run["report"]["cases"]["example_ct_dicom"]
    assert entry["output"] == str(dicom_run["target"]) and entry["preview"].endswith("seg.png")
    two = [str(real_data("totalsegmentator/example_ct_sm.nii.gz")), str(real_data(DICOM_SERIES))]
    assert main(["-i", *two, "-o", str(tmp_path / "x.nii.gz"), *model_args(models), *QUIET]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "names one output file" in err and not (tmp_path / "x.nii.gz").exists()


@pytest.mark.slow
@pytest.mark.real_data
def test_split_masks_are_the_labels_one_organ_per_file(dicom_run):
    from nnunetv2_flare.labels import FLARE_ORGANS
    masks = dicom_run["folder"] / "seg"
    assert sorted(p.name for p in masks.iterdir()) == sorted(f"{n}.nii.gz" for n in FLARE_ORGANS.values())
    for label, name in FLARE_ORGANS.items():
        mask = sitk.ReadImage(str(masks / f"{name}.nii.gz"))
        assert mask.GetSize() == dicom_run["labels"].GetSize() and mask.GetOrigin() == dicom_run["labels"].GetOrigin()
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(mask), dicom_run["array"] == label)


@pytest.mark.slow
@pytest.mark.real_data
def test_statistics_are_volumes_and_hu_inside_each_mask(dicom_run):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(real_data(DICOM_SERIES))))
    image = reader.Execute()
    ct = sitk.GetArrayFromImage(image).astype(np.float64)
    voxel_ml = np.prod(image.GetSpacing()) / 1000
    stats = dicom_run["report"]["cases"]["example_ct_dicom"]["statistics"]
    for label, name in present_organs(dicom_run["array"]).items():
        values = ct[dicom_run["array"] == label]
        s = stats[name]
        assert s["voxels"] == values.size and s["volume_ml"] == pytest.approx(values.size * voxel_ml, abs=1e-3)
        assert s["mean_hu"] == pytest.approx(values.mean(), abs=0.01)
        assert s["std_hu"] == pytest.approx(values.std(), abs=0.01)
        for p in (5, 25, 50, 75, 95):
            assert s[f"p{p}_hu"] == pytest.approx(np.percentile(values, p), abs=0.01)
    missing = [n for n, s in stats.items() if s["voxels"] == 0]
    assert all(stats[n]["mean_hu"] is None for n in missing)


@pytest.mark.slow
@pytest.mark.real_data
def test_color_table_and_report_carry_the_label_names(dicom_run):
    from nnunetv2_flare.labels import FLARE_ORGANS
    lines = [ln.split() for ln in (dicom_run["folder"] / "seg.ctbl").read_text().splitlines() if ln[0] != "#"]
    assert [(int(ln[0]), ln[1]) for ln in lines] == [(0, "background"), *FLARE_ORGANS.items()]
    assert all(len(ln) == 6 and all(0 <= int(v) <= 255 for v in ln[2:]) for ln in lines)
    assert dicom_run["report"]["settings"]["labels"] == {str(i): n for i, n in FLARE_ORGANS.items()}


@pytest.mark.slow
@pytest.mark.real_data
def test_preview_png_shows_the_ct_and_the_organ_colours(dicom_run):
    from matplotlib.image import imread

    from nnunetv2_flare.inference.outputs.label_colors import label_colors
    png = imread(str(dicom_run["folder"] / "seg.png"))[..., :3]
    assert png.shape[0] >= 400 and png.shape[1] >= 1000 and png.std() > 0.05  # not blank
    rgb = np.round(png * 255).astype(int).reshape(-1, 3)
    colors = label_colors(present_organs(dicom_run["array"]))
    for label, color in colors.items():  # each organ found: its legend swatch in its exact colour
        assert (np.abs(rgb - np.asarray(color)).max(axis=1) <= 1).sum() >= 20, label
    grey = (np.ptp(rgb, axis=1) <= 2) & (rgb.mean(axis=1) > 30)  # CT pixels
    tinted = np.ptp(rgb, axis=1) > 40  # overlay and legend
    assert grey.sum() > 10_000 and tinted.sum() > 10_000


@pytest.mark.slow
@pytest.mark.real_data
def test_dicom_seg_reads_back_as_the_nifti_labels(dicom_run):
    import pydicom

    from nnunetv2_flare.inference.inputs.reading import dicom_series_files
    seg = pydicom.dcmread(str(dicom_run["folder"] / "seg.dcm"))
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    files = dicom_series_files(real_data(DICOM_SERIES))
    slice_of = {}
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        slice_of[str(ds.SOPInstanceUID or ds.file_meta.MediaStorageSOPInstanceUID)] = k
    assert {str(s.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} \
        == set(slice_of)
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    organs = present_organs(dicom_run["array"])
    assert sorted(names.values()) == sorted(organs.values())
    by_name = {n: i for i, n in organs.items()}
    for s in seg.SegmentSequence:
        assert s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        if s.SegmentLabel == "liver":
            assert s.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    rebuilt = np.zeros_like(dicom_run["array"])
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        rebuilt[slice_of[source]][frame > 0] = by_name[names[segment]]
    np.testing.assert_array_equal(rebuilt, dicom_run["array"])


@pytest.mark.slow
@pytest.mark.real_data
def test_dicom_seg_needs_dicom_input(models, tmp_path, capsys):
    assert main(["-i", str(real_data("totalsegmentator/example_ct_sm.nii.gz")), "-o", str(tmp_path / "o"),
                 *model_args(models), "--output_type", "dicom_seg", *QUIET]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs DICOM input" in err and not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.real_data
def test_nested_dicom_folders_and_a_single_dicom_file(dicom_run, models, tmp_path):
    from nnunetv2_flare.inference.inputs.reading import list_cases
    series = real_data(DICOM_SERIES)
    for where in ("patient/study1/series_a", "patient/study2/deeper/series_b"):
        folder = tmp_path / where
        folder.mkdir(parents=True)
        for f in sorted(series.iterdir()):
            (folder / f.name).symlink_to(f)
    assert [c.name for c in list_cases([tmp_path / "patient"])] == ["study1_series_a", "study2_deeper_series_b"]
    one_file = sorted((tmp_path / "patient/study1/series_a").iterdir())[7]  # no .dcm ending: found by its preamble
    out = tmp_path / "out"
    assert main(["-i", str(one_file), "-o", str(out), *model_args(models), *QUIET]) == 0
    labels = sitk.ReadImage(str(out / "series_a.nii.gz"))
    assert labels.GetSize() == (512, 512, 20)  # the whole series, not one slice
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), dicom_run["array"])


# ------------------------------------------------------------------------------------------------ label names
@pytest.fixture(scope="module")
def three_label_models(tmp_path_factory) -> dict[str, Path]:
    """An organ model trained (randomly) on {liver, spleen, kidney}: names must come from its dataset.json."""
    labels = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
    locator, organs = write_random_cascade(tmp_path_factory.mktemp("results3"), "Dataset221_Three", tiny=True,
                                           labels=labels, **SMALL_CASCADE)
    return {"locator": locator, "organs": organs}


@pytest.mark.slow
@pytest.mark.real_data
def test_roi_subset_by_name_with_names_from_the_models_dataset_json(three_label_models, tmp_path, capsys):
    image = str(real_data("totalsegmentator/example_ct.nii.gz"))
    full, subset = tmp_path / "full", tmp_path / "subset"
    for out, extra in ((full, []), (subset, ["--roi_subset", "liver", "kidney", "--split_masks"])):
        assert main(["-i", image, "-o", str(out), *model_args(three_label_models), "--backend", "torch",
                     "--report", str(out.with_suffix(".json")), *extra, *QUIET]) == 0
    full_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(full / "example_ct.nii.gz")))
    subset_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(subset / "example_ct.nii.gz")))
    assert set(np.unique(full_labels)) <= {0, 1, 2, 3} and 2 in full_labels
    np.testing.assert_array_equal(subset_labels, np.where(np.isin(full_labels, [1, 3]), full_labels, 0))
    full_report, subset_report = report_of(full.with_suffix(".json")), report_of(subset.with_suffix(".json"))
    assert full_report["settings"]["labels"] == {"1": "liver", "2": "spleen", "3": "kidney"}
    assert set(full_report["cases"]["example_ct"]["organ_volumes_ml"]) == {"liver", "spleen", "kidney"}
    assert set(subset_report["cases"]["example_ct"]["organ_volumes_ml"]) == {"liver", "kidney"}
    assert sorted(p.name for p in (subset / "example_ct").iterdir()) == ["kidney.nii.gz", "liver.nii.gz"]
    assert main(["-i", image, "-o", str(tmp_path / "bad"), *model_args(three_label_models), "--backend", "torch",
                 "--roi_subset", "liver", "right_kidney", *QUIET]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "right_kidney is not a label of this model" in err
    assert "liver spleen kidney" in err


# ------------------------------------------------------------------------------------------------ Python API
@pytest.mark.slow
@pytest.mark.real_data
def test_python_api_takes_paths_sitk_nibabel_and_numpy(models):
    import nibabel as nib

    from nnunetv2_flare.inference import CascadeSettings, FlareCascadePredictor, ModelSettings
    predictor = FlareCascadePredictor.from_folders(models["locator"], models["organs"],
                                                   ModelSettings(backend="torch", threads=1),
                                                   CascadeSettings(progress=False))
    path = real_data("totalsegmentator/example_ct_sm.nii.gz")
    image = sitk.ReadImage(str(path))
    reference = sitk.GetArrayFromImage(predictor.predict(path))
    assert reference.any()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(predictor.predict(image)), reference)
    array = sitk.GetArrayFromImage(image)
    from_numpy = predictor.predict(array, spacing=image.GetSpacing(), origin=image.GetOrigin(),
                                   direction=image.GetDirection())
    assert isinstance(from_numpy, np.ndarray)
    np.testing.assert_array_equal(from_numpy, reference)
    nii = nib.load(str(path))
    from_nibabel = predictor.predict(nii)
    assert isinstance(from_nibabel, nib.Nifti1Image) and np.allclose(from_nibabel.affine, nii.affine)
    np.testing.assert_array_equal(np.asarray(from_nibabel.dataobj).transpose(2, 1, 0), reference)
    for bad, spacing, error, match in (([1, 2, 3], None, TypeError, "cannot predict a list"),
                                       (array, None, ValueError, "needs spacing"),
                                       (array[0], (1, 1, 1), ValueError, "give one 3D CT"),
                                       (image, (1, 1, 1), ValueError, "go with a NumPy array only")):
        with pytest.raises(error, match=match) as info:
            predictor.predict(bad, spacing=spacing)
        assert "\n" not in str(info.value)


@pytest.mark.slow
def test_restore_linear_from_the_command_line(models, tmp_path):
    """`--restore linear` reaches the predictor (the report's settings say so) and changes the labels."""
    image, _ = make_phantom(3, "tiny", fov="abdomen")
    (tmp_path / "in").mkdir()
    sitk.WriteImage(image, str(tmp_path / "in" / "case_0000.nii.gz"))
    labels = {}
    for restore in ("nearest", "linear"):
        report = tmp_path / f"{restore}.json"
        assert main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / restore), *model_args(models), "--restore",
                     restore, "--report", str(report), *QUIET]) == 0
        assert report_of(report)["settings"]["restore"] == restore
        labels[restore] = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / restore / "case.nii.gz")))
    assert labels["nearest"].shape == labels["linear"].shape and (labels["nearest"] != labels["linear"]).any()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-i", "x", "-o", "y", "--restore", "cubic"])


def test_preview_keeps_its_look_after_nnunet_set_the_seaborn_theme(tmp_path):
    """nnU-Net's progress plot calls seaborn.set(font_scale=2.5) for the whole process: the legend outgrew the
    figure and the swatches vanished when a training ran before a prediction in one process."""
    import matplotlib
    import seaborn
    from matplotlib.image import imread

    from nnunetv2_flare.inference.outputs.label_colors import label_colors
    from nnunetv2_flare.inference.outputs.preview import render_preview
    from nnunetv2_flare.labels import FLARE_ORGANS
    labels = np.zeros((20, 40, 40), np.uint8)
    for organ in range(1, 14):
        labels[8:12, 2 + 3 * (organ - 1): 4 + 3 * (organ - 1), 10:30] = organ
    colors = label_colors(FLARE_ORGANS)
    with matplotlib.rc_context():
        seaborn.set(font_scale=2.5)
        render_preview(tmp_path / "p.png", np.full(labels.shape, 40.0), labels, (2.0, 1.0, 1.0), FLARE_ORGANS,
                       colors)
        assert matplotlib.rcParams["font.size"] > 20  # the theme was still set around the drawing
    rgb = np.round(imread(str(tmp_path / "p.png"))[..., :3] * 255).astype(int).reshape(-1, 3)
    for label, color in colors.items():
        assert (np.abs(rgb - np.asarray(color)).max(axis=1) <= 1).sum() >= 20, label
