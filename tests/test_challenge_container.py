"""The challenge container without Docker: docker/predict.sh as FLARE's laptop evaluation calls it (CTs
`<case>_0000.nii.gz` in, `<case>.nii.gz` label maps out), with only the packages of the image's runtime stage
importable (no PyTorch, no nnU-Net); and the Dockerfile's conventions."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from packaging.requirements import Requirement

from nnunetv2_flare.inference import CascadeSettings, FlareCascadePredictor, ModelSettings
from nnunetv2_flare.phantoms.generator import make_phantom

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
BLOCKER = """
import sys
from importlib.abc import MetaPathFinder

class _NotInTheImage(MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed in the container")
        return None

sys.meta_path.insert(0, _NotInTheImage())
"""


def distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements() -> set[str]:
    """The distributions the Dockerfile's last stage installs by name."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    runtime = text.split("\nFROM ")[-1]
    names = set()
    for line in runtime.splitlines():
        if line.startswith("RUN ") and "pip install" in line:
            for command in line.split("&&"):
                if "pip install" in command and "--no-deps" not in command:
                    names |= {distribution(re.split(r"[=<>\[]", w.strip('"'))[0]) for w in command.split()
                              if w.strip('"')[:1].isalpha() and w not in ("pip", "install")}
    return names


def with_dependencies(names: set[str]) -> set[str]:
    found, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        for text in requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):  # this Python, no extras
                todo.append(distribution(requirement.name))
    return found


def modules_not_in_the_image() -> set[str]:
    """Every top-level module of this environment's distributions that no distribution of the runtime stage (or a
    dependency of one) provides, the standard library's aside: PyTorch and nnU-Net among them."""
    installed = with_dependencies(runtime_requirements())
    return {module for module, dists in packages_distributions().items()
            if module != "nnunetv2_flare" and module not in sys.stdlib_module_names
            and not {distribution(d) for d in dists} & installed}


@pytest.fixture(scope="module")
def container_folders(random_cascade, tmp_path_factory):
    """/workspace as the image lays it out: models/ with the two model folders under their nnU-Net names and their
    OpenVINO conversions cached (the Dockerfile's first stage), inputs/ with two CTs; and a sitecustomize that makes
    every module the image's runtime stage does not install unimportable."""
    workspace = tmp_path_factory.mktemp("workspace")
    (workspace / "models").mkdir()
    for model in random_cascade:
        (workspace / "models" / model.name).symlink_to(model)
    FlareCascadePredictor.from_folders(*[workspace / "models" / m.name for m in random_cascade],
                                       ModelSettings(backend="openvino"), CascadeSettings(progress=False))
    (workspace / "inputs").mkdir()
    for i in (1, 2):
        image, _ = make_phantom(i - 1, "tiny", fov="abdomen")  # seeds 0, 1: slices the cascade accepts (<= 20 mm)
        sitk.WriteImage(image, str(workspace / "inputs" / f"FLARETs_{i:04d}_0000.nii.gz"))
    (workspace / "site").mkdir()
    (workspace / "site" / "sitecustomize.py").write_text(BLOCKER.format(blocked=sorted(modules_not_in_the_image())))
    return workspace


def model_folder(workspace: Path, configuration: str) -> Path:
    return next((workspace / "models").glob(f"*__*__*{configuration}*"))


def runtime_env(workspace: Path) -> dict[str, str]:
    env = dict(os.environ, FLARE_INPUTS=str(workspace / "inputs"), FLARE_OUTPUTS=str(workspace / "outputs"),
               FLARE_MODELS=str(workspace / "models"), FLARE_PREDICT_OPTIONS="--threads 2")
    env["PYTHONPATH"] = os.pathsep.join([str(workspace / "site"), *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.mark.slow
def test_predict_sh_writes_one_label_map_per_ct_with_only_the_images_packages(container_folders):
    """Only what the Dockerfile's runtime stage installs is importable (PyTorch and nnU-Net are not)."""
    workspace = container_folders
    env = runtime_env(workspace)
    for absent in ("torch", "nnunetv2"):
        hidden = subprocess.run([sys.executable, "-c", f"import {absent}"], env=env, capture_output=True,
                                encoding="utf-8")
        assert hidden.returncode != 0 and "not installed in the container" in hidden.stderr  # the blocker works
    done = subprocess.run(["sh", str(DOCKER / "predict.sh")], env=env, capture_output=True, encoding="utf-8",
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    outputs = workspace / "outputs"
    assert sorted(p.name for p in outputs.iterdir()) == ["FLARETs_0001.nii.gz", "FLARETs_0002.nii.gz"]
    for i in (1, 2):
        ct = workspace / "inputs" / f"FLARETs_{i:04d}_0000.nii.gz"
        seg = outputs / f"FLARETs_{i:04d}.nii.gz"
        # what FLARE's evaluation script does with it: nibabel, uint8, the reference's (= the CT's) grid
        labels = nib.load(seg)
        assert labels.get_data_dtype() == np.uint8 and labels.shape == nib.load(ct).shape
        assert np.allclose(labels.affine, nib.load(ct).affine, atol=1e-4)
        assert np.asarray(labels.dataobj).max() <= 13
    again = subprocess.run(["sh", str(DOCKER / "predict.sh")], env=env, capture_output=True, encoding="utf-8",
                           timeout=300)
    assert again.returncode == 0 and "0 predicted, 2 kept" in again.stdout


@pytest.mark.slow
def test_predict_sh_refuses_a_models_folder_without_one_model_per_phase(container_folders, tmp_path):
    env = dict(runtime_env(container_folders), FLARE_MODELS=str(tmp_path), FLARE_OUTPUTS=str(tmp_path / "out"))
    done = subprocess.run(["sh", str(DOCKER / "predict.sh")], env=env, capture_output=True, encoding="utf-8")
    assert done.returncode == 2 and "expected one model folder" in done.stderr and "locator" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_dockerfile_follows_the_challenge_conventions():
    installed = with_dependencies(runtime_requirements())
    assert {"openvino", "simpleitk", "nibabel", "numpy", "connected-components-3d", "tqdm"} <= installed
    assert not installed & {"torch", "nnunetv2"}
    dockerfile = (DOCKER / "Dockerfile").read_text()
    stages = dockerfile.split("\nFROM ")
    assert len(stages) == 3  # header + the conversion stage + the runtime stage
    assert "download.pytorch.org/whl/cpu" in stages[1]  # PyTorch's CPU build: no CUDA libraries
    assert "torch" not in stages[2].replace("PyTorch", "")  # nothing of PyTorch at run time
    assert "COPY docker/predict.sh /workspace/predict.sh" in stages[2] and "WORKDIR /workspace" in stages[2]
    assert "COPY --from=convert /workspace/models /workspace/models" in stages[2]
    script = (DOCKER / "predict.sh").read_text()
    assert "/workspace/inputs" in script and "/workspace/outputs" in script and "--backend openvino" in script
    ignored = (ROOT / ".dockerignore").read_text().split()
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, flags=re.M):
        for path in source.split():
            assert f"!{path}" in ignored, f"{path} is copied but excluded by .dockerignore"
