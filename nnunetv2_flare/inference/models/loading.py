"""Load the two phases from standard nnU-Net results folders, without nnU-Net's trainer lookup.

A phase is a callable model (`x, grid -> labels`, NumPy arrays in the array order as read; backends/) plus what the
cascade needs around it: normalization, patch size and target spacing. Networks are built from the plans
(`get_network_from_plans`), so the folders only need plans.json, dataset.json and fold_<f>/<checkpoint>.
torch is imported only where a PyTorch network is built or run: on OpenVINO with cached models a prediction never
imports it (seconds of a cold start).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from nnunetv2_flare import names
from nnunetv2_flare.inference.models.backends import SegmentationModel
from nnunetv2_flare.inference.models.backends.torch import NetworkModel, checkpoint_configuration, load_network
from nnunetv2_flare.inference.models.digests import model_digest
from nnunetv2_flare.window_shapes import WindowRange

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class CTNormalization:
    """nnU-Net's CTNormalization: clip to the dataset's foreground 0.5 / 99.5 percentiles, z-score with its
    foreground mean and std.

    Not nnU-Net's own class (`nnunetv2.preprocessing.normalization.default_normalization_schemes.CTNormalization`):
    the challenge container's runtime stage installs neither nnU-Net nor PyTorch (docker/Dockerfile), and the
    prediction runs there. tests/test_cascade_units.py checks that both give the same values."""
    lower: float
    upper: float
    mean: float
    std: float

    @classmethod
    def from_intensity_properties(cls, props: dict) -> "CTNormalization":
        return cls(float(props["percentile_00_5"]), float(props["percentile_99_5"]), float(props["mean"]),
                   float(props["std"]))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """In place on a float array."""
        np.clip(x, self.lower, self.upper, out=x)
        x -= self.mean
        x /= max(self.std, 1e-8)
        return x


@dataclass
class Phase:
    model: SegmentationModel
    normalization: CTNormalization
    patch_size: tuple[int, int, int]  # array order as read
    spacing: tuple[float, float, float] | None  # array order as read; None: resize to patch_size (the locator)
    num_classes: int
    source: str = "injected"
    label_names: dict[int, str] | None = None  # from the model's dataset.json; None: the FLARE organs
    orientation: str | None = None  # the voxel orientation it was trained in; None: not fixed by its plans
    reader: str | None = None  # the plans' image_reader_writer (nifti_transforms.py); None: SimpleITK's reading
    identity: str = "injected"  # digest of its plans, dataset.json and checkpoints (digests.model_digest)
    stride: int = 1  # the network's total stride: windows other than the patch are multiples of it
    batch_size: int = 1  # the plans' batch size (the voxel budget of windows fitted for a fixed-patch model)
    # array order: the window shapes the model was trained on (any-window training, window_shapes.py); None: its
    # patch alone
    window_range: WindowRange | None = None


# nnU-Net reader / writer -> the orientation its arrays are in (readers not listed give arrays as stored)
READER_ORIENTATIONS = {"NibabelIOWithReorient": "RAS"}


def training_orientation(plans: dict) -> str | None:
    """The voxel orientation the model's training arrays had (`READER_ORIENTATIONS`), None where the reader kept
    each file's own."""
    return READER_ORIENTATIONS.get(plans.get("image_reader_writer", ""))


def label_names(dataset_json: dict) -> dict[int, str]:
    """Foreground label id -> name from an nnU-Net dataset.json (`labels: {"background": 0, "liver": 1, ...}`)."""
    return {int(v): str(k) for k, v in sorted(dataset_json.get("labels", {}).items(), key=lambda kv: int(kv[1]))
            if not isinstance(v, (list, tuple)) and int(v) != 0}


def _to_array_order(values: Sequence, transpose_forward: Sequence[int]) -> tuple:
    """Plans values are in network order (after transpose_forward); the cascade works in the order as read."""
    out = [None] * len(values)
    for network_axis, array_axis in enumerate(transpose_forward):
        out[array_axis] = values[network_axis]
    return tuple(out)


def fold_folder_name(fold: str | int) -> str:
    return "fold_all" if str(fold) == "all" else f"fold_{int(fold)}"


def configuration_of_folder(folder: Path) -> str:
    parts = folder.name.split("__")
    if len(parts) != 3:
        raise ValueError(f"{folder}: not an nnU-Net results folder name (<Trainer>__<Plans>__<configuration>).")
    return parts[2]


def resolve_configuration(plans: dict, name: str, visited: tuple[str, ...] = ()) -> dict:
    """A plans configuration with `inherits_from` resolved (nnU-Net's rule: the child's keys override the parent's).

    Read here rather than through nnU-Net's PlansManager, whose import would add to a single case's latency (and
    the container runs without nnU-Net)."""
    configurations = plans.get("configurations", {})
    if name not in configurations:
        raise ValueError(f"configuration {name!r} is not in the plans (it has {sorted(configurations)})")
    if name in visited:
        raise ValueError(f"circular inherits_from in the plans: {' -> '.join(visited + (name,))}")
    configuration = dict(configurations[name])
    parent = configuration.get("inherits_from")
    if parent:
        resolved = resolve_configuration(plans, parent, visited + (name,))
        resolved.update(configuration)
        configuration = resolved
    return configuration


def number_of_classes(dataset_json: dict) -> int:
    labels = dataset_json.get("labels", {})
    if any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise ValueError("the cascade needs plain integer labels; this model was trained on regions")
    return len({int(v) for v in labels.values()})


def _configuration_name(folder: Path, plans: dict, checkpoint_file: Path) -> str:
    """From the folder name (<Trainer>__<Plans>__<configuration>: free), else from the checkpoint (a renamed
    folder: costs a checkpoint load)."""
    try:
        name = configuration_of_folder(folder)
    except ValueError as folder_error:
        name, error = None, folder_error
    if name in plans.get("configurations", {}):
        return name
    from_checkpoint = checkpoint_configuration(checkpoint_file)
    if from_checkpoint:
        return from_checkpoint
    if name is None:
        raise error
    return name


@dataclass(frozen=True)
class ModelFolder:
    """What a trained model folder says about itself, read without building its network."""
    folder: Path
    checkpoint_files: list[Path]  # one per fold
    plans: dict
    dataset_json: dict
    configuration_name: str
    configuration: dict  # inherits_from resolved


def read_model_folder(model_folder: str | os.PathLike, folds: Sequence[str | int],
                      checkpoint_name: str = names.CHECKPOINT, configuration: str | None = None) -> ModelFolder:
    """The files a phase needs (plans.json, dataset.json, fold_<f>/<checkpoint>) and its configuration, which must
    use CT normalization; FileNotFoundError / ValueError saying what is wrong otherwise."""
    folder = Path(model_folder)
    checkpoint_files = [folder / fold_folder_name(f) / checkpoint_name for f in folds]
    for needed in (folder / "plans.json", folder / "dataset.json", *checkpoint_files):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} is missing: {folder} must be a trained nnU-Net model folder "
                                    f"(plans.json, dataset.json, {needed.parent.name}/{checkpoint_name}). "
                                    f"Check -f / -chk, or train that fold first.")
    plans = json.loads((folder / "plans.json").read_text())
    configuration = configuration or _configuration_name(folder, plans, checkpoint_files[0])
    config = resolve_configuration(plans, configuration)
    scheme = config["normalization_schemes"][0]
    if scheme != "CTNormalization":
        raise ValueError(f"{folder}: configuration {configuration} uses {scheme}; the cascade supports "
                         f"CTNormalization only.")
    return ModelFolder(folder, checkpoint_files, plans, json.loads((folder / "dataset.json").read_text()),
                       configuration, config)


def load_phase(model_folder: str | os.PathLike, fold: str | int | Sequence[str | int] = "all",
               checkpoint_name: str = names.CHECKPOINT, device: str | torch.device = "cpu",
               configuration: str | None = None, backend: str = "torch", threads: int | None = None,
               precision: str = "fp32", tta: bool = False, shift_tta: bool = False,
               class_scores: bool = False) -> Phase:
    """`backend`: 'torch' (eager fp32) or 'openvino' (CPU; the converted model is cached, see backends/openvino.py),
    where `precision` is 'fp32' or 'bf16' (checked by backends.check_precision). `fold`: one fold ('all',
    3) or several (an ensemble averaging their probabilities per tile, ensemble.py). `tta`: each fold also sees
    the 7 mirrored copies of every tile (nnU-Net's mirroring), averaged in the same ensemble; `shift_tta`: the 7
    copies shifted by one voxel along each combination of axes (ensemble.Shifted), likewise. `class_scores`: the
    model also gives the class scores its labels come from (the cascade's restore='linear'); OpenVINO then leaves
    the argmax out of its graph."""
    from nnunetv2_flare.inference.models.ensemble import (
        MIRROR_AXES,
        SHIFT_TTA_OFFSETS,
        FoldEnsemble,
        Mirrored,
        Shifted,
        parse_folds,
    )

    folds = parse_folds(fold)
    model = read_model_folder(model_folder, folds, checkpoint_name, configuration)
    plans, dataset_json, config, checkpoint_files = model.plans, model.dataset_json, model.configuration, \
        model.checkpoint_files
    num_classes = number_of_classes(dataset_json)
    transpose = plans.get("transpose_forward", [0, 1, 2])
    patch_size = [int(p) for p in config["patch_size"]]
    # one pass: labels straight out (OpenVINO's in-graph argmax)
    labels_out = len(folds) == 1 and not tta and not shift_tta and not class_scores

    def fold_model(checkpoint_file: Path):
        def network() -> nn.Module:
            return load_network(config["architecture"], num_classes, checkpoint_file)

        if backend == "openvino":  # imported here: OpenVINO is an optional extra
            from nnunetv2_flare.inference.models.backends.openvino import openvino_phase_model
            return openvino_phase_model(network, checkpoint_file, patch_size, transpose, threads, precision,
                                        labels=labels_out, stride=stride)
        return NetworkModel(network(), transpose, device)

    stride = total_stride(config["architecture"])
    members = [fold_model(c) for c in checkpoint_files]
    window_range = trained_window_range(members, transpose)
    if tta:
        members = [Mirrored(m, axes) for m in members for axes in MIRROR_AXES]
    if shift_tta:
        members = [Shifted(m, shift) for m in members for shift in SHIFT_TTA_OFFSETS]
    return Phase(model=members[0] if labels_out else FoldEnsemble(members),
                 normalization=CTNormalization.from_intensity_properties(
                     plans["foreground_intensity_properties_per_channel"]["0"]),
                 patch_size=_to_array_order(patch_size, transpose),
                 spacing=_to_array_order([float(s) for s in config["spacing"]], transpose),
                 num_classes=num_classes, source=", ".join(map(str, checkpoint_files)),
                 label_names=label_names(dataset_json), orientation=training_orientation(plans),
                 reader=plans.get("image_reader_writer"), identity=model_digest(model.folder, checkpoint_files),
                 stride=stride,
                 batch_size=int(config.get("batch_size", 1)), window_range=window_range)


def total_stride(architecture: dict) -> int:
    """The network's total stride from the plans' `strides` (the largest along any axis; 1 without strides)."""
    strides = architecture.get("arch_kwargs", {}).get("strides")
    if not strides:
        return 1
    return int(max(np.prod(np.asarray(strides, dtype=np.int64), axis=0)))


def trained_window_range(members: Sequence, transpose_forward: Sequence[int]) -> WindowRange | None:
    """The window range every fold's checkpoint records, in the array order as read; None where any fold was
    trained on its patch alone or the folds' ranges differ (they are then run on their common patch)."""
    records = [getattr(m, "trained_window", None) for m in members]
    if not records or any(r is None or r != records[0] for r in records):
        return None
    backward = sorted(range(len(transpose_forward)), key=lambda i: transpose_forward[i])
    return WindowRange.from_dict(records[0]).permuted(backward)


def resolve_model_folders(dataset: str | int, locator_trainer: str = names.LOCATOR_TRAINER,
                          locator_configuration: str = names.LOCATOR_CONFIGURATION,
                          organ_trainer: str = names.ORGAN_TRAINER,
                          organ_configuration: str = names.ORGAN_CONFIGURATION, plans: str = names.PLANS,
                          results_folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The locator and organ model folders of a dataset under $nnUNet_results."""
    results = results_folder or os.environ.get("nnUNet_results")
    if not results:
        raise RuntimeError("nnUNet_results is not set: export nnUNet_results=/path/to/results, or name the model "
                           "folders directly with -m1 LOCATOR_FOLDER -m2 ORGAN_FOLDER.")
    results = Path(results)
    name = str(dataset)
    if not name.startswith("Dataset"):
        dataset_id = int(name)
        matches = sorted(p.name for p in results.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir())
        if len(matches) != 1:
            raise FileNotFoundError(f"{'No' if not matches else 'More than one'} dataset with id {dataset_id} in "
                                    f"{results} ({matches}).")
        name = matches[0]
    folders = (results / name / f"{locator_trainer}__{plans}__{locator_configuration}",
               results / name / f"{organ_trainer}__{plans}__{organ_configuration}")
    for f in folders:
        if not f.is_dir():
            raise FileNotFoundError(f"Model folder {f} not found. Train it first, or pick the trainer / "
                                    f"configuration / plans with -tr1 -c1 -tr2 -c2 -p, or use -m1/-m2.")
    return folders
