"""Synthetic abdominal CT phantoms with the 13 FLARE organ labels (`nnUNetv2_flare_make_phantoms`)."""
from nnunetv2_flare.phantoms.dataset import write_phantom_dataset
from nnunetv2_flare.phantoms.generator import Phantom, make_phantom, make_phantom_arrays

__all__ = ["Phantom", "make_phantom", "make_phantom_arrays", "write_phantom_dataset"]
