"""The two networks of the cascade. Import them from here; nnU-Net plans name them by dotted path."""
from nnunetv2_flare.networks.architectures.flare_locator import FlareLocator
from nnunetv2_flare.networks.architectures.flare_organ_net import FlareOrganNet

__all__ = ["FlareLocator", "FlareOrganNet"]
