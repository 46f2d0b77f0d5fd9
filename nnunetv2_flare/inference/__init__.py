"""Prediction with the two-phase cascade: `FlareCascadePredictor` (Python API) and `nnUNetv2_flare_predict`.

Map (each layer imports only from the layers listed after it; tests/test_import_graph.py checks it):

- `cli/`: the command. `predict.py` parses the options and maps library errors to exit codes (cli_errors.py);
  `checks.py` refuses contradictory options and, before any model loads, asks batch/plan.py for the batch's plan.
- `predictor.py`: `FlareCascadePredictor`, the cascade plus `predict_files`, the API the command wraps.
- `batch/`: many cases: `plan.py` (every check of a batch request, once), `runner.py` (the loop: keep, predict or
  refuse each case, report after each), `request_record.py` (the request a label file records, what a rerun does
  with it), `report.py` (the JSON report), `safety.py` (output folder, per-case claims, clean stops), `parts.py`
  (nnU-Net's -num_parts / -part_id).
- `outputs/`: the files of one case: `case_outputs.py` (where they go; companion files), `dicom_seg.py`,
  `preview.py`, `label_colors.py`.
- `core/`: one case, in memory: `cascade.py` (`Cascade`: locate, crop, segment, restore), `settings.py`
  (`ModelSettings`, `CascadeSettings`), `result.py` (`CascadeResult`), `sliding_window.py`, `box_following.py`,
  `postprocessing.py`, `organ_statistics.py`.
- `models/`: the networks: `loading.py` (a phase from an nnU-Net results folder), `ensemble.py` (folds, TTA),
  `digests.py` (what identifies a model), `backends/` (PyTorch, OpenVINO).
- `inputs/`: one CT before the networks: `reading.py` (files, DICOM series, case names), `checks.py` (refuse or
  repair), `orientation.py`, `nifti_transforms.py` (qform / sform), `api_inputs.py` (NumPy, nibabel, SimpleITK in
  and out).
- `geometry.py`: boxes, voxel grids and resizing, used by every layer.
"""
from __future__ import annotations

from typing import Any

# where each public name lives; imported on first use: `nnUNetv2_flare_predict -h` should not wait for torch
_PUBLIC = {"FlareCascadePredictor": "nnunetv2_flare.inference.predictor",
           "Cascade": "nnunetv2_flare.inference.core.cascade",
           "CascadeResult": "nnunetv2_flare.inference.core.result",
           "CascadeSettings": "nnunetv2_flare.inference.core.settings",
           "ModelSettings": "nnunetv2_flare.inference.core.settings"}
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(name)
