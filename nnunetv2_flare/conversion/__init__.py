"""FLARE's public releases (FLARE22, FLARE23, FLARE24 Task 2) to nnU-Net raw datasets: nnUNetv2_flare_convert."""
from nnunetv2_flare.conversion.convert import ConversionResult, convert_flare_release
from nnunetv2_flare.conversion.layouts import LayoutError, recognise_layout

__all__ = ["ConversionResult", "LayoutError", "convert_flare_release", "recognise_layout"]
