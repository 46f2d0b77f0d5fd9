"""The plans templates shipped as JSON data in the top-level plans/ folder (package nnunetv2_flare.plans_templates)."""
from __future__ import annotations

import json
from importlib import resources
from typing import Sequence

from nnunetv2_flare.names import LOCATOR_CONFIGURATION, ORGAN_CONFIGURATION, PLANS

TEMPLATE_FILES = {PLANS: "flare_plans.json"}


def load_plans_template(plans_identifier: str = PLANS) -> dict:
    if plans_identifier not in TEMPLATE_FILES:
        raise ValueError(f"no plans template named {plans_identifier!r}; available: {sorted(TEMPLATE_FILES)}")
    text = resources.files("nnunetv2_flare.plans_templates").joinpath(TEMPLATE_FILES[plans_identifier]).read_text()
    template = json.loads(text)
    template.pop("_comment", None)
    return template


def cascade_sizes(locator_size: Sequence[int] | None = None, organ_patch_size: Sequence[int] | None = None,
                  organ_spacing: Sequence[float] | None = None
                  ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[float, ...]]:
    """The locator's input size, the organ patch size and the organ spacing (array order z, y, x): those given, and
    the paper's for the others, as FlarePlans' template states them (128^3, 96^3, 2 x 1.5 x 1.5 mm)."""
    configurations = load_plans_template()["configurations"]
    organs = configurations[ORGAN_CONFIGURATION]
    return (tuple(locator_size or configurations[LOCATOR_CONFIGURATION]["patch_size"]),
            tuple(organ_patch_size or organs["patch_size"]),
            tuple(float(s) for s in organ_spacing or organs["spacing"]))
