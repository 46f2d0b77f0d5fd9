"""The OpenVINO backend: same logits and labels as PyTorch, a cache that is reused and never stale, and a clear
error when OpenVINO is missing. OpenVINO is part of the test extra, so these run in CI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cascade_oracles import SMALL_CASCADE
from nnunetv2_flare.evaluation.metrics import foreground_agreement
from nnunetv2_flare.inference import CascadeSettings, FlareCascadePredictor, ModelSettings
from nnunetv2_flare.inference.models.backends import (
    base as backends_base,
    check_precision,
    openvino as openvino_backend,
    resolve_backend,
)
from nnunetv2_flare.inference.models.backends.openvino import OpenVINOModel
from nnunetv2_flare.inference.models.loading import load_phase
from nnunetv2_flare.phantoms import make_phantom
from tool_modules import load_tool

write_random_cascade = load_tool("random_models").write_random_cascade


@pytest.fixture(scope="module")
def models(random_cascade) -> tuple[Path, Path]:
    return random_cascade


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NNUNETV2_FLARE_CACHE", str(tmp_path / "user_cache"))
    return tmp_path / "user_cache"


def test_resolve_backend() -> None:
    assert resolve_backend("auto", "cpu") == "openvino"  # installed with the test extra
    assert resolve_backend("torch", "cpu") == "torch"
    assert resolve_backend("auto", "cuda") == "torch"
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("onnx")
    with pytest.raises(ValueError, match="runs on the CPU"):
        resolve_backend("openvino", "cuda")


def test_missing_openvino_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(backends_base, "openvino_available", lambda: False)
    assert resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(RuntimeError, match=r"pip install \"nnunetv2-flare\[openvino\]\""):
        resolve_backend("openvino", "cpu")


@pytest.mark.slow
def test_openvino_logits_match_torch(models) -> None:
    """The converted inference graph with logits out (what the labels model ends in the argmax of)."""
    _, organs = models
    network = load_phase(organs, backend="torch").model.network
    x = torch.randn(1, 1, *SMALL_CASCADE["organ_patch_size"])
    with torch.inference_mode():
        expected = network(x).numpy()
    compiled = openvino_backend.compile_on_cpu(
        openvino_backend.convert(network, tuple(x.shape), labels=False), openvino_backend.compile_config())
    got = compiled({0: x.numpy()})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_openvino_argmax_breaks_ties_like_torch() -> None:
    """Exact ties (integer weights and inputs) go to the lower class, as torch.argmax and NumPy's argmax do."""
    torch.manual_seed(0)
    network = torch.nn.Conv3d(2, 6, 1, bias=False)
    with torch.no_grad():
        network.weight.copy_(torch.randint(-1, 2, network.weight.shape))
    x = torch.randint(-2, 3, (1, 2, 4, 5, 6)).float()
    with torch.inference_mode():
        logits = network(x)
    assert ((logits == logits.max(1, keepdim=True).values).sum(1) > 1).any(), "the test needs ties"
    compiled = openvino_backend.compile_on_cpu(openvino_backend.convert(network, tuple(x.shape)),
                                               openvino_backend.compile_config())
    got = compiled({0: x.numpy()})[0]
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, logits.argmax(1).numpy())


def same_share(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


@pytest.mark.slow
def test_openvino_labels_match_torch_and_the_cache_is_reused(models, monkeypatch) -> None:
    _, organs = models
    torch_phase = load_phase(organs, backend="torch")
    ov_phase = load_phase(organs, backend="openvino")
    assert isinstance(ov_phase.model, OpenVINOModel)
    cached = sorted((organs / "fold_all" / "openvino").glob("*.xml"))
    assert len(cached) == 1 and cached[0].with_suffix(".bin").is_file()
    assert ov_phase.model.model_file == cached[0]
    assert not list((organs / "fold_all" / "openvino").glob(".*tmp*"))  # no temporaries left behind
    x = torch.randn(1, 1, *SMALL_CASCADE["organ_patch_size"]).numpy()
    expected = torch_phase.model(x)
    got = ov_phase.model(x)
    assert got.shape == expected.shape == SMALL_CASCADE["organ_patch_size"] and got.dtype == np.uint8
    assert len(np.unique(expected)) > 1
    # random weights leave near-ties between classes, where float rounding may pick either
    assert same_share(got, expected) >= 0.995
    with pytest.raises(ValueError, match="takes inputs of shape"):  # other windows: multiples of the stride
        ov_phase.model(np.zeros((1, 1, 20, 32, 32), np.float32))

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache holds this checkpoint")
    monkeypatch.setattr(openvino_backend, "convert", no_conversion)
    again = load_phase(organs, backend="openvino")
    np.testing.assert_array_equal(again.model(x), got)


@pytest.mark.slow
def test_a_changed_checkpoint_is_converted_again(tmp_path) -> None:
    _, organs = write_random_cascade(tmp_path, "Dataset221_FLARE", tiny=True, **SMALL_CASCADE)
    x = torch.randn(1, 1, *SMALL_CASCADE["organ_patch_size"]).numpy()
    before = load_phase(organs, backend="openvino").model(x)
    checkpoint = organs / "fold_all" / "checkpoint_final.pth"
    data = torch.load(checkpoint, weights_only=False)
    for v in data["network_weights"].values():
        if v.is_floating_point():
            v.add_(0.1 * torch.randn_like(v))
    torch.save(data, checkpoint)
    phase = load_phase(organs, backend="openvino")
    assert len(list((organs / "fold_all" / "openvino").glob("*.xml"))) == 2
    expected = load_phase(organs, backend="torch").model(x)
    assert same_share(phase.model(x), expected) >= 0.995
    assert same_share(before, expected) < 0.9  # the stale model would have been caught


@pytest.mark.slow
def test_unwritable_model_folder_falls_back_to_the_user_cache(tmp_path, user_cache, monkeypatch) -> None:
    _, organs = write_random_cascade(tmp_path, "Dataset222_FLARE", tiny=True, **SMALL_CASCADE)
    (organs / "fold_all" / "openvino").write_text("a file where the cache folder would go")  # mkdir fails
    load_phase(organs, backend="openvino")
    assert len(list((user_cache / "openvino").glob("*.xml"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize("restore", ["nearest", "linear"])
def test_cascade_with_openvino_agrees_with_torch(models, tmp_path, restore) -> None:
    """`linear` needs the organ network's logits: OpenVINO converts a graph without the argmax then."""
    locator, organs = models
    image, _ = make_phantom(3, "tiny", fov="abdomen")
    runs = {}
    for backend in ("torch", "openvino"):
        predictor = FlareCascadePredictor.from_folders(locator, organs, ModelSettings(backend=backend),
                                                       CascadeSettings(progress=False, restore=restore))
        assert predictor.settings()["organ_backend"] == backend
        assert predictor.settings()["organ_precision"] == "fp32"
        assert predictor.settings()["restore"] == restore
        runs[backend] = predictor.run(image)
    a = runs["torch"].labels
    b = runs["openvino"].labels
    la, lb = sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)
    assert la.shape == lb.shape and a.GetSpacing() == b.GetSpacing()
    same, total = foreground_agreement(la, lb)
    assert total > 0 and same / total >= 0.99, (same, total)


def test_precision_bf16_only_where_native(monkeypatch) -> None:
    assert check_precision("fp32", "torch") == check_precision("fp32", "openvino") == "fp32"
    with pytest.raises(ValueError, match="openvino backend only"):
        check_precision("bf16", "torch")
    with pytest.raises(ValueError, match="unknown precision"):
        check_precision("fp16", "openvino")
    monkeypatch.setattr(backends_base, "native_bf16", lambda: False)
    with pytest.raises(ValueError, match="no native bf16"):  # OpenVINO would silently compute in fp32
        check_precision("bf16", "openvino")
    monkeypatch.setattr(backends_base, "native_bf16", lambda: True)
    assert check_precision("bf16", "openvino") == "bf16"


@pytest.mark.slow
def test_the_model_reports_the_precision_openvino_computes_in(models) -> None:
    _, organs = models
    phase = load_phase(organs, backend="openvino", precision="fp32")
    assert phase.model.precision == "fp32"
    if backends_base.native_bf16():  # measurable only on a CPU with AVX512_BF16 / AMX
        assert load_phase(organs, backend="openvino", precision="bf16").model.precision == "bf16"


@pytest.mark.slow
def test_a_prediction_on_openvino_never_imports_torch(models, tmp_path) -> None:
    """`import torch` is ~2 s of a cold start: with both networks converted, the OpenVINO path runs without it."""
    locator, organs = models
    image, _ = make_phantom(3, "tiny", fov="abdomen")
    sitk.WriteImage(image, str(tmp_path / "case_0000.nii.gz"))
    # converts and caches both models
    FlareCascadePredictor.from_folders(locator, organs, ModelSettings(backend="openvino"),
                                       CascadeSettings(progress=False))
    script = (
        "import sys\n"
        "from nnunetv2_flare.inference import CascadeSettings, FlareCascadePredictor, ModelSettings\n"
        f"p = FlareCascadePredictor.from_folders({str(locator)!r}, {str(organs)!r}, ModelSettings(backend='openvino'), "
        "CascadeSettings(progress=False))\n"
        f"labels = p.predict({str(tmp_path / 'case_0000.nii.gz')!r})\n"
        "assert labels.GetSize() == ({0}, {1}, {2})\n".format(*image.GetSize())
        + "print('torch imported' if 'torch' in sys.modules else 'no torch')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, encoding="utf-8", timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("no torch"), done.stdout


@pytest.mark.slow
def test_a_failing_kernel_cache_falls_back_to_compiling_without_it(models, monkeypatch) -> None:
    """Two processes starting on one model write the same cached kernels; OpenVINO can then fail in one of them
    (seen: "cannot set permissions" on the blob). That process must still predict."""
    import openvino
    real_core = openvino.Core
    cached_attempts = []

    class CacheRaceCore:
        def __init__(self) -> None:
            self.core, self.cached = real_core(), False

        def set_property(self, properties: dict) -> None:
            self.cached = "CACHE_DIR" in properties
            self.core.set_property(properties)

        def read_model(self, *args):
            return self.core.read_model(*args)

        def compile_model(self, *args):
            if self.cached:
                cached_attempts.append(args)
                raise RuntimeError("filesystem error: cannot set permissions: No such file or directory [x.blob]")
            return self.core.compile_model(*args)

    _, organs = models
    load_phase(organs, backend="openvino")  # converted (and cached) with the real Core
    monkeypatch.setattr(openvino, "Core", CacheRaceCore)
    phase = load_phase(organs, backend="openvino")
    x = np.zeros((1, 1, *SMALL_CASCADE["organ_patch_size"]), np.float32)
    assert phase.model(x).shape == SMALL_CASCADE["organ_patch_size"]  # compiled at first use
    assert len(cached_attempts) == 1  # the cache was tried first
