"""What the cascade returns for one case: the labels on the input's grid and everything measured on the way."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import SimpleITK as sitk

from nnunetv2_flare.inference.geometry import Box
from nnunetv2_flare.inference.inputs.nifti_transforms import NiftiTransforms


@dataclass(kw_only=True)
class CascadeResult:
    labels: sitk.Image
    crop_box: Box
    crop_from_locator: bool
    working_shape: tuple[int, int, int]
    n_patches: int
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    organ_volumes_ml: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    orientation: dict = field(default_factory=dict)
    organ_spacing_input_zyx: tuple[float, ...] | None = None  # the organ spacing along the input's array axes
    statistics: dict | None = None  # per organ volume and HU statistics (statistics=True)
    # the checked image in the processed orientation, and how to view `labels` in it (previews); not in the report
    canonical_image: sitk.Image | None = field(default=None, repr=False, compare=False)
    labels_to_canonical: Callable[[sitk.Image], np.ndarray] | None = field(default=None, repr=False, compare=False)
    located_box: Box | None = None  # the locator's box on the input, where follow_organs grew it into crop_box
    # the organ network's windows: per segmented region (the box, then any slabs follow_organs added) the window
    # shape (array order of the processed orientation) and how many of them
    windows: list[tuple[tuple[int, int, int], int]] = field(default_factory=list)
    # a NIfTI input's qform and sform where they disagree: its label files carry both (nifti_transforms.py)
    nifti_transforms: NiftiTransforms | None = field(default=None, repr=False, compare=False)

    @property
    def canonical_labels(self) -> np.ndarray | None:
        """`labels` in the processed orientation: a read-only view of its voxels, no copy (a full-size label array
        of a huge scan is 0.4 GB), valid while this result holds `labels`."""
        return None if self.labels_to_canonical is None else self.labels_to_canonical(self.labels)

    def to_report(self) -> dict:
        spacing_zyx = self.labels.GetSpacing()[::-1]
        return {
            "image_size_xyz": list(self.labels.GetSize()),
            "spacing_xyz": [round(s, 4) for s in self.labels.GetSpacing()],
            **self.orientation,  # crop box: the input's indices; working shape: the processed orientation's
            "crop_box": {**self.crop_box.to_report(spacing_zyx), "from_locator": self.crop_from_locator,
                         **({"grown_from": self.located_box.to_report(spacing_zyx)} if self.located_box else {})},
            "working_shape_xyz": list(self.working_shape[::-1]),
            "n_patches": self.n_patches,
            "organ_windows": [{"shape_xyz": list(shape[::-1]), "count": count} for shape, count in self.windows],
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "organ_volumes_ml": {k: round(v, 2) for k, v in self.organ_volumes_ml.items()},
            **({"statistics": self.statistics} if self.statistics is not None else {}),
        }
