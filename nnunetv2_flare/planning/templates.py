"""The plans templates shipped as JSON data in the top-level plans/ folder (package nnunetv2_flare.plans_templates)."""
from __future__ import annotations

import json
from importlib import resources

from nnunetv2_flare.names import PLANS

TEMPLATE_FILES = {PLANS: "flare_plans.json"}


def load_plans_template(plans_identifier: str = PLANS) -> dict:
    if plans_identifier not in TEMPLATE_FILES:
        raise ValueError(f"no plans template named {plans_identifier!r}; available: {sorted(TEMPLATE_FILES)}")
    text = resources.files("nnunetv2_flare.plans_templates").joinpath(TEMPLATE_FILES[plans_identifier]).read_text()
    template = json.loads(text)
    template.pop("_comment", None)
    return template
