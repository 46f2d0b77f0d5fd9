"""Prediction with the two-phase cascade: `FlareCascadePredictor` (Python API) and `nnUNetv2_flare_predict`."""
from __future__ import annotations

from typing import Any

__all__ = ["FlareCascadePredictor", "CascadeResult"]


def __getattr__(name: str) -> Any:  # lazy: `nnUNetv2_flare_predict -h` should not wait for torch
    if name in __all__:
        from nnunetv2_flare.inference import cascade
        return getattr(cascade, name)
    raise AttributeError(name)
