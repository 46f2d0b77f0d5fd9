"""`FlareCascadePredictor`: the cascade (core/cascade.py) plus batches of files (batch/runner.py), the API the
nnUNetv2_flare_predict command wraps."""
from __future__ import annotations

import os
from typing import Iterable

from nnunetv2_flare.inference.batch.runner import BatchResult, predict_files
from nnunetv2_flare.inference.core.cascade import Cascade
from nnunetv2_flare.inference.outputs.case_outputs import OutputOptions


class FlareCascadePredictor(Cascade):
    """One object per set of models, reusable across cases and batches.

    >>> predictor.predict_files(["imagesTs"], "predictions", report="report.json")
    The single-case methods (`predict`, `run`, `segment_box`) and the constructors are `Cascade`'s.
    """

    def predict_files(self, inputs: str | os.PathLike | Iterable[str | os.PathLike], output_folder: str | os.PathLike,
                      overwrite: bool = False, report: str | os.PathLike | None = None, num_parts: int = 1,
                      part_id: int = 0, outputs: OutputOptions | None = None) -> BatchResult:
        """Predict every case of `inputs` into `output_folder` (batch/runner.py: skipping, claims, parts, report)."""
        return predict_files(self, inputs, output_folder, overwrite, report, num_parts, part_id, outputs)
