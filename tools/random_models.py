"""Write nnU-Net results folders with random weights for both phases (tests, benchmarks, trying the CLI).

The folders have the standard layout `<results>/<Dataset>/<Trainer>__<Plans>__<configuration>/{plans.json,
dataset.json, fold_<f>/checkpoint_final.pth}` and load through `inference/models/loading.load_phase` like trained ones.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunetv2_flare import names
from nnunetv2_flare.atomic_io import atomic_path, write_json_atomic
from nnunetv2_flare.inference.models.loading import fold_folder_name
from nnunetv2_flare.labels import dataset_json_labels
from nnunetv2_flare.planning.templates import cascade_sizes
from nnunetv2_flare.window_shapes import WindowRange

# CT foreground statistics of a typical abdominal dataset (used only for normalization of random models)
CT_INTENSITY_PROPERTIES = {"max": 3071.0, "mean": 90.0, "median": 95.0, "min": -1024.0,
                           "percentile_00_5": -980.0, "percentile_99_5": 1100.0, "std": 180.0}

# the networks' defaults are the paper's configuration; `strides` as the plans name them (the deep-supervision
# scales and the organ network's total stride, 16, which windows other than the patch are multiples of)
ORGAN_STRIDES = [[1, 1, 1]] + [[2, 2, 2]] * 4
PAPER_LOCATOR_KWARGS: dict = {}
PAPER_ORGAN_KWARGS: dict = {"strides": ORGAN_STRIDES}
TINY_LOCATOR_KWARGS = {"features_per_stage": [8, 16, 32, 64], "head_embed_dim": 16, "head_fuse_groups": 16}
TINY_ORGAN_KWARGS = {"features_per_stage": [6, 12, 24, 48], "head_dim": 6, "strides": ORGAN_STRIDES}


def plans_configuration(network_class: str, arch_kwargs: dict, patch_size: Sequence[int],
                   spacing: Sequence[float]) -> dict:
    return {
        "data_identifier": "random", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": list(patch_size), "median_image_size_in_voxels": list(patch_size), "spacing": list(spacing),
        "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {"network_class_name": network_class, "arch_kwargs": dict(arch_kwargs),
                         "_kw_requires_import": []},
        "batch_dice": False,
    }


def write_random_model_folder(folder: str | os.PathLike, dataset_name: str, configuration: str, network_class: str,
                              arch_kwargs: dict, labels: dict[str, int], patch_size: Sequence[int],
                              spacing: Sequence[float], fold: str | int = "all", seed: int = 0,
                              transpose_forward: Sequence[int] = (0, 1, 2),
                              window_range: WindowRange | None = None) -> Path:
    """`window_range` (network axis order): recorded in the checkpoint as any-window training records it."""
    folder = Path(folder)
    (folder / fold_folder_name(fold)).mkdir(parents=True, exist_ok=True)
    backward = sorted(range(3), key=lambda i: transpose_forward[i])
    plans = {
        "dataset_name": dataset_name, "plans_name": folder.name.split("__")[1] if "__" in folder.name else names.PLANS,
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": list(patch_size),
        "image_reader_writer": "SimpleITKIO", "transpose_forward": list(transpose_forward),
        "transpose_backward": backward, "experiment_planner_used": "random_models",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": dict(CT_INTENSITY_PROPERTIES)},
        "configurations": {configuration: plans_configuration(network_class, arch_kwargs, patch_size, spacing)},
    }
    dataset = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 0, "file_ending": ".nii.gz"}
    write_json_atomic(plans, folder / "plans.json")
    write_json_atomic(dataset, folder / "dataset.json")
    torch.manual_seed(seed)
    network = get_network_from_plans(network_class, arch_kwargs, [], 1, len(labels), deep_supervision=False)
    checkpoint = {"network_weights": network.state_dict(), "trainer_name": "random_weights",
                  "init_args": {"configuration": configuration, "fold": fold},
                  "inference_allowed_mirroring_axes": None}
    if window_range is not None:
        checkpoint[names.WINDOW_CHECKPOINT_KEY] = window_range.to_dict()
    with atomic_path(folder / fold_folder_name(fold) / names.CHECKPOINT) as tmp:
        torch.save(checkpoint, tmp)
    return folder


def write_random_cascade(results_folder: str | os.PathLike, dataset_name: str = "Dataset220_FLARE",
                         tiny: bool = True, locator_size: Sequence[int] | None = None,
                         organ_patch_size: Sequence[int] | None = None,
                         organ_spacing: Sequence[float] | None = None, fold: str | int = "all",
                         organ_configuration: str = names.ORGAN_CONFIGURATION,
                         transpose_forward: Sequence[int] = (0, 1, 2), seed_offset: int = 0,
                         labels: dict[str, int] | None = None,
                         organ_window_range: WindowRange | None = None) -> tuple[Path, Path]:
    """Locator and organ folders under `<results_folder>/<dataset_name>/`; tiny=False: the paper's networks.
    Calling it again with another `fold` (and `seed_offset`, so the folds differ) adds that fold. `labels`: the
    organ model's dataset.json labels (default: the 13 FLARE organs). `organ_window_range`: the organ checkpoint
    says it was trained for these windows (window_shapes.py). Sizes and spacing not given are the paper's
    (FlarePlans' template)."""
    locator_size, organ_patch_size, organ_spacing = cascade_sizes(locator_size, organ_patch_size, organ_spacing)
    base = Path(results_folder) / dataset_name
    locator = write_random_model_folder(
        base / f"{names.LOCATOR_TRAINER}__{names.PLANS}__{names.LOCATOR_CONFIGURATION}", dataset_name,
        names.LOCATOR_CONFIGURATION,
        "nnunetv2_flare.networks.FlareLocator", TINY_LOCATOR_KWARGS if tiny else PAPER_LOCATOR_KWARGS,
        {"background": 0, "abdomen": 1}, locator_size, [1.0, 1.0, 1.0], fold, seed=1 + seed_offset,
        transpose_forward=transpose_forward)
    organs = write_random_model_folder(
        base / f"{names.ORGAN_TRAINER}__{names.PLANS}__{organ_configuration}", dataset_name, organ_configuration,
        "nnunetv2_flare.networks.FlareOrganNet", TINY_ORGAN_KWARGS if tiny else PAPER_ORGAN_KWARGS,
        labels or dataset_json_labels(), organ_patch_size, organ_spacing, fold, seed=2 + seed_offset,
        transpose_forward=transpose_forward, window_range=organ_window_range)
    return locator, organs
