"""Training the organ network for any window shape, so that prediction can fit its windows to the crop.

At every iteration the training loader draws a window shape from the trainer's `WindowRange` (window_shapes.py:
each axis a multiple of the network's total stride, from a third to three times the nominal patch, at most one
nominal batch's voxels) and the number of such windows that fit the voxel budget (at most the nominal batch size),
so a step costs about what a fixed-patch step costs. Along each axis the window is clipped to the largest case of
the batch (rounded up to the stride): prediction shows the network the whole crop at most, never padding beyond it.
Cropping, foreground oversampling and augmentation are nnU-Net's, built for each window shape once and reused.
Validation during training keeps the nominal patch. The checkpoint records the range (names.WINDOW_CHECKPOINT_KEY),
from which `nnUNetv2_flare_predict --window auto` chooses fitted windows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from nnunetv2_flare.atomic_io import atomic_path
from nnunetv2_flare.names import WINDOW_CHECKPOINT_KEY
from nnunetv2_flare.window_shapes import WindowRange


@dataclass
class TrainingTransforms:
    """What nnU-Net's get_training_transforms takes besides the patch size, so the loader can build the pipeline for
    each window shape (plain data and a class: the loader is copied into nnU-Net's augmentation workers)."""
    trainer_class: type
    rotation_for_DA: object
    deep_supervision_scales: list | None
    mirror_axes: tuple[int, ...] | None
    do_dummy_2d_data_aug: bool
    spatially_augmented: bool  # False: the loader reads the window itself (no rotation margin)
    kwargs: dict

    def initial_patch_size(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The region the loader reads so that rotation and scaling still fill the window (nnU-Net's rule)."""
        if not self.spatially_augmented:
            return tuple(shape)
        size = get_patch_size(shape, *(self.rotation_for_DA,) * 3, (0.85, 1.25))
        if self.do_dummy_2d_data_aug:
            size[0] = shape[0]
        return tuple(int(s) for s in size)

    def build(self, shape: Sequence[int]):
        return self.trainer_class.get_training_transforms(
            list(shape), self.rotation_for_DA, self.deep_supervision_scales, self.mirror_axes,
            self.do_dummy_2d_data_aug, **self.kwargs)


class AnyWindowDataLoader(nnUNetDataLoader):
    """nnU-Net's training loader with a window shape and batch size drawn for every batch (module docstring)."""

    def __init__(self, data, patch_size: Sequence[int], window_range: WindowRange, max_batch: int,
                 transforms: TrainingTransforms, label_manager, oversample_foreground_percent: float = 0.0,
                 probabilistic_oversampling: bool = False) -> None:
        super().__init__(data, max_batch, transforms.initial_patch_size(patch_size), patch_size, label_manager,
                         oversample_foreground_percent=oversample_foreground_percent,
                         probabilistic_oversampling=probabilistic_oversampling)
        self.window_range, self.max_batch, self.training_transforms = window_range, max_batch, transforms
        self._pipelines: dict[tuple[int, ...], object] = {}
        self._case_shapes: dict[str, tuple[int, ...]] = {}
        self._drawn_keys = None

    def case_shape(self, key: str) -> tuple[int, ...]:
        if key not in self._case_shapes:
            self._case_shapes[key] = tuple(int(s) for s in self._data.load_case(key)[0].shape[1:])
        return self._case_shapes[key]

    def get_indices(self):
        if self._drawn_keys is not None:  # the batch's cases were drawn with its window (generate_train_batch)
            keys, self._drawn_keys = self._drawn_keys, None
            return keys
        return super().get_indices()

    def draw_window(self) -> tuple[tuple[int, ...], list]:
        """This batch's window shape and cases (nnU-Net's random state, so seeded runs repeat)."""
        shape, self.batch_size = self.window_range.draw(np.random, self.max_batch)
        keys = super().get_indices()
        extent = np.max([self.case_shape(k) for k in keys], axis=0)
        return self.window_range.clipped_to(shape, extent), keys

    def generate_train_batch(self):
        shape, keys = self.draw_window()
        if shape not in self._pipelines:
            self._pipelines[shape] = self.training_transforms.build(shape)
        self.final_patch_size = shape
        self.patch_size = self.training_transforms.initial_patch_size(shape)
        self.need_to_pad = (np.array(self.patch_size) - np.array(shape)).astype(int)
        self.transforms = self._pipelines[shape]
        self._drawn_keys = keys
        return super().generate_train_batch()


def network_stride(pool_op_kernel_sizes: Sequence[Sequence[int]]) -> int:
    """The network's total stride, the same along every axis for the organ network."""
    strides = np.prod(np.vstack(pool_op_kernel_sizes), axis=0)
    if len(set(int(s) for s in strides)) != 1:
        raise ValueError(f"any-window training needs the same total stride along every axis; got {strides}")
    return int(strides[0])


class AnyWindowTraining:
    """Mixin for an organ trainer: draws the window shape per batch (module docstring). The range is around the
    configuration's patch: `window_smallest` to `window_largest` times it per axis, at most `batch_size` patches'
    voxels (per process under DDP: each GPU holds its own batch)."""

    window_smallest: float = 1 / 3
    window_largest: float = 3.0
    # nnU-Net forces foreground into the last third of a batch, which is none of a batch of one (the large windows):
    # each window instead holds foreground with the oversampling probability
    window_probabilistic_oversampling: bool = True

    def window_range(self) -> WindowRange:
        patch = self.configuration_manager.patch_size
        stride = network_stride(self.configuration_manager.pool_op_kernel_sizes)
        return WindowRange.around(patch, stride, self.batch_size, self.window_smallest, self.window_largest)

    def get_dataloaders(self):
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        patch = self.configuration_manager.patch_size
        deep_supervision_scales = self._get_deep_supervision_scales()
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        label_kwargs = dict(is_cascaded=self.is_cascaded, foreground_labels=self.label_manager.foreground_labels,
                            regions=self.label_manager.foreground_regions if self.label_manager.has_regions else None,
                            ignore_label=self.label_manager.ignore_label)
        transforms = TrainingTransforms(
            type(self), rotation, deep_supervision_scales, mirror_axes, dummy_2d,
            spatially_augmented=tuple(initial_patch_size) != tuple(patch),
            kwargs=dict(use_mask_for_norm=self.configuration_manager.use_mask_for_norm, **label_kwargs))
        window_range = self.window_range()
        self.print_to_log_file(f"any-window training: window shapes {window_range.minimum} .. {window_range.maximum} "
                               f"(multiples of {window_range.stride}), at most {window_range.max_voxels} voxels a "
                               f"batch, batch size up to {self.batch_size}")
        dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        dl_tr = AnyWindowDataLoader(dataset_tr, patch, window_range, self.batch_size, transforms, self.label_manager,
                                    self.oversample_foreground_percent,
                                    self.probabilistic_oversampling or self.window_probabilistic_oversampling)
        dl_val = nnUNetDataLoader(dataset_val, self.batch_size, patch, patch, self.label_manager,
                                  oversample_foreground_percent=self.oversample_foreground_percent,
                                  transforms=self.get_validation_transforms(deep_supervision_scales, **label_kwargs),
                                  probabilistic_oversampling=self.probabilistic_oversampling)
        return self._augmenters(dl_tr, dl_val)

    def _augmenters(self, dl_tr, dl_val):
        """In the training process or in nnU-Net's worker processes, as nnUNetTrainer does it."""
        processes = get_allowed_n_proc_DA()
        if processes == 0:
            train, val = SingleThreadedAugmenter(dl_tr, None), SingleThreadedAugmenter(dl_val, None)
        else:
            pin = self.device.type == "cuda"
            train = NonDetMultiThreadedAugmenter(dl_tr, None, num_processes=processes,
                                                 num_cached=max(6, processes // 2), pin_memory=pin, wait_time=0.002)
            val = NonDetMultiThreadedAugmenter(dl_val, None, num_processes=max(1, processes // 2),
                                               num_cached=max(3, processes // 4), pin_memory=pin, wait_time=0.002)
        next(train)
        next(val)
        return train, val

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, plus the window range (network axis order) the predictor reads."""
        super().save_checkpoint(filename)
        if self.local_rank != 0 or self.disable_checkpointing:
            return
        checkpoint = torch.load(filename, map_location="cpu", weights_only=False)
        checkpoint[WINDOW_CHECKPOINT_KEY] = self.window_range().to_dict()
        with atomic_path(filename) as tmp:
            torch.save(checkpoint, tmp)
