"""The package ships plans/ and trainers/ and lists every subpackage (installs non-editable too)."""
from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "nnunetv2_flare").rglob("__init__.py")}
    assert on_disk <= listed, f"add to [tool.setuptools].packages: {sorted(on_disk - listed)}"
    assert config["package-dir"]["nnunetv2_flare.plans_templates"] == "plans"
    assert config["package-dir"]["nnunetv2_flare.ext_trainers"] == "trainers"


def test_plans_and_trainers_resolve_through_the_installed_package():
    import nnunetv2_flare.ext_trainers as trainers
    import nnunetv2_flare.plans_templates as plans
    assert Path(plans.__path__[0]).resolve() == (ROOT / "plans").resolve()
    assert Path(trainers.__path__[0]).resolve() == (ROOT / "trainers").resolve()
