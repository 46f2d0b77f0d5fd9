"""nnUNetv2_flare_evaluate against FLARE's official evaluation script, value by value.

The oracle is ../shared/tools/flare_official/run_official.py (FLARE's script, unchanged, run with --unrounded in a
subprocess on files written here); it is a reference, never copied into the repository. The pairs come from
tools/compare_official_metric.py's quick selection: real labels (3D-IRCADb mapped to FLARE ids, TotalSegmentator)
perturbed by erosion, dilation, shifts, dropped and false organs, cut tubes, DSC in [0.1, 0.2), boundary noise,
anisotropic spacing, flipped and permuted headers and tolerance ties. Skipped only where ../shared is absent.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cascade_oracles import REAL_DATA, SHARED
from nnunetv2_flare.evaluation import evaluate_folders
from nnunetv2_flare.evaluation.metrics import neighbour_codes

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_RUNNER = SHARED / "tools" / "flare_official" / "run_official.py"
AGREEMENT = 1e-4
AORTA, ESOPHAGUS = 5, 10

pytestmark = pytest.mark.skipif(not (OFFICIAL_RUNNER.is_file() and REAL_DATA.is_dir()),
                                reason="../shared (FLARE's script and the real labels) is not next to the repository")


def _comparison_tool():
    spec = importlib.util.spec_from_file_location("compare_official_metric",
                                                  ROOT / "tools" / "compare_official_metric.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    return _comparison_tool()


@pytest.mark.slow
@pytest.mark.real_data
def test_every_dsc_and_nsd_matches_flares_script_on_perturbed_real_labels(tool, tmp_path):
    pairs = tool.build_pairs("quick")
    diffs, official, ours, _, _ = tool.compare(pairs, tmp_path)
    assert len(official) == len(pairs) >= 20
    worst = {metric: max(values.values()) for metric, values in diffs.items()}
    assert worst["DSC"] <= AGREEMENT and worst["NSD"] <= AGREEMENT, tool.format_differences(diffs, official)

    # the selection reaches every rule, so the agreement above is not an agreement on easy cases only
    values = [(name, label, case["DSC"][label], case["NSD"][label])
              for name, case in official.items() for label in case["DSC"]]
    assert any(0.1 <= dsc < 0.2 and nsd == 0 for _, _, dsc, nsd in values)  # NSD cleared below DSC 0.2
    assert sum(1 for _, _, dsc, nsd in values if dsc >= 0.2 and 0 < nsd < 1) >= 50  # NSD where tolerance matters
    assert any(label == ESOPHAGUS and 0 < dsc < 1 for _, label, dsc, _ in values)
    outside = official["ircadb_small__tubes_outside__native"]
    assert outside["DSC"][AORTA] == outside["NSD"][AORTA] == 0  # predicted, but only outside [first, last)
    assert 0 < official["ircadb_small__cut_tubes__permuted"]["DSC"][AORTA] < 1
    assert {name.split("__")[2] for name in official} >= {"native", "aniso", "flipped", "permuted", "ties"}


def _random_noise_pairs(tool, rng: np.random.Generator) -> list:
    """Noise label maps whose reference and prediction overlap in part: every corner configuration occurs, and
    a part of each surface lies beyond the tolerance, so the NSD depends on every configuration's area."""
    pairs = []
    for k, spacing in enumerate([(1.7, 0.9, 2.6), (0.6, 2.2, 1.1)]):
        ref = np.zeros((17, 9, 9), np.uint8)
        pred = np.zeros_like(ref)
        for label, density in ((7, 0.5), (12, 0.35)):
            ref[:12][(rng.random((12, 9, 9)) < density) & (ref[:12] == 0)] = label
            pred[5:][(rng.random((12, 9, 9)) < density) & (pred[5:] == 0)] = label
        reference = tool.Reference(f"noise{k}", ref, spacing, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
        pairs.append(tool.Pair(f"noise{k}", reference, pred, spacing, reference.direction))
    return pairs


def test_all_256_corner_configurations_weigh_as_in_flares_script(tool, tmp_path):
    pairs = _random_noise_pairs(tool, np.random.default_rng(7))
    codes = set()
    for pair in pairs:
        for label in (7, 12):
            codes |= set(np.unique(neighbour_codes(pair.reference.labels == label)).tolist())
    assert codes == set(range(256))
    diffs, official, _, _, _ = tool.compare(pairs, tmp_path)
    assert any(0 < case["NSD"][label] < 1 for case in official.values() for label in (7, 12))
    assert max(max(v.values()) for v in diffs.values()) <= AGREEMENT


def test_a_tube_on_one_reference_slice_crashes_flares_script_but_gets_a_score_here(tool, tmp_path):
    ref = np.zeros((12, 12, 8), np.uint8)
    ref[4:8, 4:8, 3] = AORTA
    pred = ref.copy()
    pred[4:6, 4:8, 3] = 0
    reference = tool.Reference("one_slice", ref, (0.8, 0.8, 2.5), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    ref_dir, pred_dir = tool.write_pairs([tool.Pair("one_slice", reference, pred, reference.spacing,
                                                    reference.direction)], tmp_path)
    official = subprocess.run([sys.executable, str(OFFICIAL_RUNNER), str(ref_dir), str(pred_dir),
                               str(tmp_path / "out.csv"), "--unrounded"], capture_output=True, encoding="utf-8")
    assert official.returncode != 0 and "zero-size array" in official.stderr  # its slice range [3, 3) is empty
    case = evaluate_folders(ref_dir, pred_dir, labels=[AORTA], progress=False)["per_case"][0]
    assert case["DSC"]["aorta"] == pytest.approx(2 * 8 / (16 + 8))  # scored on slice 3
