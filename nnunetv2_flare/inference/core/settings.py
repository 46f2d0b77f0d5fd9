"""Every setting of a prediction, in two frozen dataclasses: `ModelSettings`, how the networks are loaded and run
(nnUNetv2_predict's -f, -chk, -device, plus the runtime), and `CascadeSettings`, how the cascade segments a case.
The defaults are the paper's method; nnUNetv2_flare_predict's options map onto these fields one to one
(docs/prediction.md). No heavy imports: the command's `-h` reads the choices here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from nnunetv2_flare.names import CHECKPOINT

if TYPE_CHECKING:
    import torch

# crop margin, mm per side, around the located abdomen (cascade) or the current label (pseudo-labels)
CASCADE_MARGIN_MM = 15.0
# --orientation's default: process each scan in the orientation the models were trained in (their plans' reader)
MODEL_ORIENTATION = "model"
# how the organ labels return from the working resolution to the input grid: the labels by nearest neighbour (the
# paper's way, the fastest) or nnU-Net's way, the class scores interpolated linearly and their argmax taken
RESTORE_MODES = ("nearest", "linear")
# --follow_organs without a number: rounds of growing the box where organs reach its faces (box_following.py)
FOLLOW_ORGANS_ROUNDS = 3
# the organ network's windows (window_shapes.py): from the checkpoint, tiles of the training patch, or fitted to the
# crop
WINDOW_MODES = ("auto", "tiles", "fitted")
MIN_COMPONENT_SIDE = 20  # voxels of the original grid (docs/method.md: components smaller than 20^3 are removed)


@dataclass(frozen=True)
class ModelSettings:
    """How both phases' networks are loaded and run."""
    fold: str | int | Sequence[str | int] = "all"  # 'all', one fold, or several: a fold ensemble (ensemble.py)
    checkpoint_name: str = CHECKPOINT
    device: str | torch.device = "cpu"
    threads: int | None = None  # CPU threads; None: every core this process may use
    # 'torch', 'openvino' (CPU, optional extra), or 'auto': OpenVINO where installed and the device is the CPU; with
    # OpenVINO and both models converted (cached at first use) torch is never imported
    backend: str = "auto"
    # the organ network's precision: 'fp32', or 'bf16' (OpenVINO on a CPU with native bf16; the locator stays fp32)
    precision: str = "fp32"
    tta: bool = False  # nnU-Net's mirroring: 8 passes per tile and fold, averaged; off in the paper's method
    # the organ network also sees every tile shifted by one voxel along each combination of axes (its stride-2 stem's
    # 8 sampling phases; 8 passes per tile, fold and mirror, averaged; docs/prediction.md)
    shift_tta: bool = False


@dataclass(frozen=True)
class CascadeSettings:
    """How the cascade segments a case, whatever the models."""
    margin_mm: float = CASCADE_MARGIN_MM  # crop margin around the located abdomen, per side
    min_component_side: int = MIN_COMPONENT_SIDE  # locator components smaller than this cube are dropped
    tile_min_overlap: float = 0.0  # 1 - nnU-Net's step_size; 0: the fewest tiles that cover the crop
    # the voxel orientation every scan is processed in: MODEL_ORIENTATION (the one the models were trained in), a
    # code such as 'RAS', or None (the array as read)
    orientation: str | None = MODEL_ORIENTATION
    # organ names to keep; the others become background (TotalSegmentator's --roi_subset: the networks still see
    # every class, so the kept organs are the same as in a full prediction)
    roi_subset: Sequence[str] | None = None
    statistics: bool = False  # per organ volume and HU statistics in each result (organ_statistics.py)
    # RESTORE_MODES: how the working-resolution labels return to the input grid; 'linear' keeps the organ network's
    # class scores and interpolates them where labels meet (geometry.resize_labels_linear_slabs)
    restore: str = RESTORE_MODES[0]
    follow_organs: int = 0  # rounds of growing the box where organ labels reach its faces (box_following.py)
    # WINDOW_MODES: 'tiles' of the training patch, 'fitted' to the crop (window_shapes.py), or 'auto': fitted for a
    # model trained for any window, tiles otherwise
    window: str = WINDOW_MODES[0]
    # the most voxels in one fitted window (None: the trained range's, one nominal batch): smaller windows split the
    # crop into more of them, for less memory and time (a voxel costs less in a small window) but less context
    window_voxels: int | None = None
    progress: bool = True  # progress bars

    def __post_init__(self) -> None:
        if self.restore not in RESTORE_MODES:
            raise ValueError(f"restore must be one of {', '.join(RESTORE_MODES)}, not {self.restore!r}")
        if int(self.follow_organs) != self.follow_organs or self.follow_organs < 0:
            raise ValueError(f"follow_organs must be a whole number of rounds >= 0, not {self.follow_organs!r}")
        if self.window not in WINDOW_MODES:
            raise ValueError(f"window must be one of {', '.join(WINDOW_MODES)}, not {self.window!r}")
        if self.window_voxels is not None:
            if int(self.window_voxels) != self.window_voxels or self.window_voxels <= 0:
                raise ValueError(f"window_voxels must be a whole number of voxels > 0, not {self.window_voxels!r}")
            object.__setattr__(self, "window_voxels", int(self.window_voxels))
        # one type per field, so that equal settings give equal reports and request records
        for name, kind in (("margin_mm", float), ("min_component_side", int), ("tile_min_overlap", float),
                           ("follow_organs", int), ("statistics", bool)):
            object.__setattr__(self, name, kind(getattr(self, name)))
        object.__setattr__(self, "roi_subset", tuple(self.roi_subset) if self.roi_subset else None)

