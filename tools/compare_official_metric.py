"""Compare nnUNetv2_flare_evaluate with FLARE's official evaluation script, value by value, on real labels.

References are real label maps from ../shared/data/real (3D-IRCADb patient 1 mapped to FLARE ids at run time,
TotalSegmentator's *_flare13 files); predictions are made from them by erosion, dilation, shifts, dropped and
false organs, cut tubes, boundary noise and shifts that put the DSC in [0.1, 0.2); some pairs are written with
anisotropic spacings, flipped or permuted header directions, or spacings where many distances equal a tolerance
exactly. FLARE's script (../shared/tools/flare_official/run_official.py --unrounded, run unchanged in a subprocess)
scores every pair, our evaluation scores the same files, and the largest |difference| per organ is printed, with
the time of both on a 200 x 200 x 100 case.

    python tools/compare_official_metric.py                  # ~130 pairs, a few minutes
    python tools/compare_official_metric.py --selection quick  # the test's small selection
    python tools/compare_official_metric.py --timing-only

The official script is a reference, not a dependency: it is run where it lies and never copied. tests/
test_official_agreement.py runs the quick selection of this comparison as a test.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunetv2_flare.evaluation.evaluate_folders import evaluate_folders
from nnunetv2_flare.labels import FLARE_ORGANS, Z_RANGE_RESTRICTED

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL = SHARED / "data" / "real"
OFFICIAL_RUNNER = SHARED / "tools" / "flare_official" / "run_official.py"
IRCADB_TO_FLARE = {449: 1, 451: 1, 453: 1, 465: 1, 481: 1, 193: 2, 385: 3, 513: 5, 33: 6, 129: 13}  # SOURCES.md
AORTA, IVC, ESOPHAGUS = 5, 6, 10
LABELS = sorted(FLARE_ORGANS)


@dataclass(frozen=True)
class Reference:
    """A reference label map in FLARE's axis order (x, y, z) with its header."""
    name: str
    labels: np.ndarray
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]


@dataclass(frozen=True)
class Pair:
    name: str
    reference: Reference
    prediction: np.ndarray
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]


# --- references -------------------------------------------------------------------------------------------------

def _read_xyz(path: Path) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, ...]]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), image.GetSpacing(), image.GetDirection()


def ircadb_flare_labels() -> tuple[np.ndarray, tuple[float, float, float]]:
    """3D-IRCADb patient 1's manual labels mapped to FLARE ids (512 x 512 x 129, x y z)."""
    codes, spacing, _ = _read_xyz(REAL / "3dircadb" / "3Dircadb0101Labeled.nii.gz")
    lookup = np.zeros(int(codes.max()) + 1, np.uint8)
    for code, flare_id in IRCADB_TO_FLARE.items():
        lookup[code] = flare_id
    return lookup[codes], spacing


def _identity() -> tuple[float, ...]:
    return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _relabel(labels: np.ndarray, old: int, new: int) -> np.ndarray:
    out = labels.copy()
    out[labels == old] = new
    return out


def load_references(selection: str) -> list[Reference]:
    """`quick`: two small references (the test's); `full`: seven, up to 512 x 512 x 20 and 200 x 200 x 100."""
    ircadb, (sx, sy, sz) = ircadb_flare_labels()
    small = ircadb[100:460:3, 150:390:3, 0:129:2]  # every 3rd / 2nd voxel: a coarse 120 x 80 x 65 copy
    small_ref = Reference("ircadb_small", np.ascontiguousarray(small), (3 * sx, 3 * sy, 2 * sz), _identity())
    ts_seg, ts_spacing, ts_direction = _read_xyz(REAL / "totalsegmentator" / "example_seg_flare13.nii.gz")
    if selection == "quick":
        # the IVC relabelled as esophagus: FLARE's third tubular organ, 3 mm tolerance, on real anatomy
        return [small_ref, Reference("ts_seg_eso", _relabel(ts_seg, IVC, ESOPHAGUS), ts_spacing, ts_direction)]
    half = ircadb[40:480:2, 100:400:2, :]
    references = [
        Reference("ircadb_box200", np.ascontiguousarray(ircadb[180:380, 160:360, 15:115]), (sx, sy, sz), _identity()),
        Reference("ircadb_half", np.ascontiguousarray(half), (2 * sx, 2 * sy, sz), _identity()),
        Reference("ircadb_half_eso", _relabel(np.ascontiguousarray(half), IVC, ESOPHAGUS), (2 * sx, 2 * sy, sz),
                  _identity()),
        Reference("ts_seg", ts_seg, ts_spacing, ts_direction),
    ]
    for name in ("example_seg_fast", "example_seg_fast_force_split", "example_seg_dicom"):
        labels, spacing, direction = _read_xyz(REAL / "totalsegmentator" / f"{name}_flare13.nii.gz")
        references.append(Reference(name.replace("example_", "ts_"), labels, spacing, direction))
    return references


# --- perturbations (prediction = f(reference labels, rng)) ------------------------------------------------------

def _present(labels: np.ndarray) -> list[int]:
    return [label for label in LABELS if (labels == label).any()]


def erode(labels: np.ndarray, rng: np.random.Generator, iterations: int = 1) -> np.ndarray:
    out = labels.copy()
    for label in _present(labels):
        mask = labels == label
        out[mask & ~ndimage.binary_erosion(mask, iterations=iterations)] = 0
    return out


def dilate(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = labels.copy()
    for label in _present(labels):
        out[ndimage.binary_dilation(labels == label) & (out == 0)] = label
    return out


def shifted(mask: np.ndarray, offset: tuple[int, ...]) -> np.ndarray:
    """`mask` moved by `offset` voxels; what leaves the array is lost, what enters is background."""
    out = np.zeros_like(mask)
    source = tuple(slice(max(0, -o), s - max(0, o)) for o, s in zip(offset, mask.shape))
    target = tuple(slice(max(0, o), s - max(0, -o)) for o, s in zip(offset, mask.shape))
    out[target] = mask[source]
    return out


def shift_small(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return shifted(labels, (1, 0, 0))


def shift_oblique(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return shifted(labels, (0, 2, 1))


def shift_slices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return shifted(labels, (0, 0, 2))


def drop_organs(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    present = _present(labels)
    out = labels.copy()
    out[np.isin(labels, present[1::3])] = 0  # every third organ present is missed
    return out


def false_organs(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blobs of organs the reference does not have, in its background, plus an eroded rest."""
    out = erode(labels, rng)
    absent = [label for label in LABELS if label not in _present(labels)]
    grid = np.indices(labels.shape, dtype=np.float32)
    for k, label in enumerate(absent[:3]):
        centre = [s * (0.25 + 0.25 * k) for s in labels.shape]
        radii = [max(2.0, s / 12) for s in labels.shape]
        blob = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
        out[blob & (out == 0)] = label
    return out


def _slice_range(mask: np.ndarray) -> tuple[int, int]:
    slices = np.flatnonzero(mask.any(axis=(0, 1)))
    return int(slices[0]), int(slices[-1])


def cut_tubes(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tubes predicted on part of their range only, or continued beyond the reference's last slice."""
    out = labels.copy()
    tubes = [label for label in Z_RANGE_RESTRICTED if (labels == label).any()]
    for k, label in enumerate(tubes):
        mask = labels == label
        first, last = _slice_range(mask)
        if k % 2 == 0:  # keep the upper part of the range only
            out[:, :, first:(first + last) // 2][mask[:, :, first:(first + last) // 2]] = 0
        else:  # continue the tube past its last slice and drop its first one
            for z in range(last + 1, min(labels.shape[2], last + 4)):
                out[:, :, z][mask[:, :, last] & (out[:, :, z] == 0)] = label
            out[:, :, first][mask[:, :, first]] = 0
    return out


def tubes_outside_range(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tubes predicted only from the reference's last labelled slice on: empty inside FLARE's [first, last) range,
    so DSC = NSD = 0 there although the prediction is not empty."""
    out = labels.copy()
    for label in Z_RANGE_RESTRICTED:
        mask = labels == label
        if not mask.any():
            continue
        first, last = _slice_range(mask)
        out[mask] = 0
        for z in range(last, min(labels.shape[2], last + 3)):
            out[:, :, z][mask[:, :, last] & (out[:, :, z] == 0)] = label
    return out


def _shift_for_dice(mask: np.ndarray, low: float, high: float) -> np.ndarray | None:
    """The mask shifted along some axis so that its Dice with itself lies in [low, high), if a shift does that."""
    for axis in (0, 1, 2):
        for step in range(1, mask.shape[axis]):
            offset = tuple(step if a == axis else 0 for a in range(3))
            moved = shifted(mask, offset)
            dsc = 2 * int((moved & mask).sum()) / (int(mask.sum()) + int(moved.sum()) or 1)
            if dsc < low:
                break
            if dsc < high:
                return moved
    return None


def low_overlap(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each organ moved so far that its DSC falls in [0.1, 0.2) (NSD then 0), or just above 0.2 for every other
    one (NSD computed at low overlap)."""
    out = np.zeros_like(labels)
    for k, label in enumerate(_present(labels)):
        window = (0.1, 0.2) if k % 2 == 0 else (0.2, 0.3)
        moved = _shift_for_dice(labels == label, *window)
        if moved is not None:
            out[moved & (out == 0)] = label
    return out


def boundary_noise(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A third of the organ boundary voxels take the label of a random face neighbour."""
    boundary = ndimage.grey_dilation(labels, size=3) != ndimage.grey_erosion(labels, size=3)
    chosen = boundary & (rng.random(labels.shape) < 1 / 3)
    out = labels.copy()
    axes, steps = rng.integers(0, 3, labels.shape), rng.choice([-1, 1], labels.shape)
    for axis in range(3):
        for step in (-1, 1):
            pick = chosen & (axes == axis) & (steps == step)
            out[pick] = np.roll(labels, step, axis=axis)[pick]
    return out


def mixed(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Different errors per organ: eroded twice, dilated, shifted, swapped with a neighbour's label."""
    out = np.zeros_like(labels)
    for k, label in enumerate(_present(labels)):
        mask = labels == label
        mask = [ndimage.binary_erosion(mask, iterations=2), ndimage.binary_dilation(mask),
                shifted(mask, (2, 0, 1)), mask][k % 4]
        out[mask & (out == 0)] = label
    return out


def identity(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return labels.copy()


PERTURBATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "identity": identity, "erode": erode, "dilate": dilate, "shift_x1": shift_small, "shift_y2z1": shift_oblique,
    "shift_z2": shift_slices, "drop": drop_organs, "false": false_organs, "cut_tubes": cut_tubes,
    "tubes_outside": tubes_outside_range, "low_dsc": low_overlap, "noise": boundary_noise, "mixed": mixed,
}

# header variants: (spacing factor or fixed spacing, direction); "native" keeps the reference's header
HEADERS: dict[str, tuple[tuple[float, float, float] | None, tuple[float, ...] | None]] = {
    "native": (None, None),
    "aniso": ((0.7, 1.3, 4.5), None),
    "flipped": (None, (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)),
    # the third array axis runs along physical x: FLARE still cuts tubes along the third array axis
    "permuted": (None, (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)),
    # many surface distances equal the tolerances (2, 3, 5, 7 mm) exactly, some only up to rounding
    "ties": ((0.4, 0.5, 1.0), None),
}

SELECTIONS: dict[str, dict[str, list[str]]] = {
    # header -> perturbations, for every reference of the selection
    "quick": {"native": ["erode", "shift_y2z1", "drop", "false", "cut_tubes", "tubes_outside", "low_dsc", "noise"],
              "aniso": ["mixed"], "flipped": ["dilate"], "permuted": ["cut_tubes"], "ties": ["shift_x1"]},
    "full": {"native": list(PERTURBATIONS),
             "aniso": ["erode", "noise", "low_dsc", "cut_tubes"], "flipped": ["shift_z2", "cut_tubes", "mixed"],
             "permuted": ["cut_tubes", "tubes_outside", "shift_z2"], "ties": ["shift_x1", "dilate", "noise"]},
}


def build_pairs(selection: str) -> list[Pair]:
    pairs = []
    for reference in load_references(selection):
        for header, perturbations in SELECTIONS[selection].items():
            spacing, direction = HEADERS[header]
            for perturbation in perturbations:
                name = f"{reference.name}__{perturbation}__{header}"
                rng = np.random.default_rng(zlib.crc32(name.encode()))
                pairs.append(Pair(name, reference, PERTURBATIONS[perturbation](reference.labels, rng),
                                  spacing or reference.spacing, direction or reference.direction))
    return pairs


# --- running both and comparing ---------------------------------------------------------------------------------

def _write_xyz(labels: np.ndarray, spacing, direction, path: Path) -> None:
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels.transpose(2, 1, 0)).astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(d) for d in direction))
    sitk.WriteImage(image, str(path))


def write_pairs(pairs: list[Pair], folder: Path) -> tuple[Path, Path]:
    ref_dir, pred_dir = folder / "ref", folder / "pred"
    ref_dir.mkdir(parents=True, exist_ok=True)
    pred_dir.mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        _write_xyz(pair.reference.labels, pair.spacing, pair.direction, ref_dir / f"{pair.name}.nii.gz")
        _write_xyz(pair.prediction, pair.spacing, pair.direction, pred_dir / f"{pair.name}.nii.gz")
    return ref_dir, pred_dir


Scores = dict[str, dict[str, dict[int, float]]]  # case name -> "DSC" / "NSD" -> label -> value


def run_official(ref_dir: Path, pred_dir: Path, out_csv: Path) -> tuple[Scores, float]:
    """FLARE's script, unrounded, in a subprocess. Returns its scores and its own wall time (without start-up)."""
    done = subprocess.run([sys.executable, str(OFFICIAL_RUNNER), str(ref_dir), str(pred_dir), str(out_csv),
                           "--unrounded"], capture_output=True, encoding="utf-8", check=True)
    seconds = float(done.stderr.split("official wall")[1].split()[0])
    scores: Scores = {}
    with open(out_csv, newline="") as f:
        rows = list(csv.reader(f))
    # columns: Name, then DSC of organs 1..13, then NSD of organs 1..13
    for row in rows[1:]:
        values = [float(v) for v in row[1:]]
        scores[row[0].removesuffix(".nii.gz")] = {
            "DSC": dict(zip(LABELS, values[:13])), "NSD": dict(zip(LABELS, values[13:26]))}
    return scores, seconds


def run_ours(ref_dir: Path, pred_dir: Path) -> tuple[Scores, float]:
    start = time.perf_counter()
    summary = evaluate_folders(ref_dir, pred_dir, progress=False)
    seconds = time.perf_counter() - start
    by_name = {v: int(k) for k, v in summary["labels"].items()}
    scores = {Path(c["reference_file"]).name.removesuffix(".nii.gz"): {
        metric: {by_name[organ]: value for organ, value in c[metric].items()} for metric in ("DSC", "NSD")}
        for c in summary["per_case"]}
    return scores, seconds


def differences(official: Scores, ours: Scores) -> dict[str, dict[int, float]]:
    """Largest |ours - official| per metric and organ over all cases both scored."""
    if set(official) != set(ours):
        raise AssertionError(f"cases differ: {sorted(set(official) ^ set(ours))}")
    return {metric: {label: max(abs(ours[c][metric][label] - official[c][metric][label]) for c in official)
                     for label in LABELS}
            for metric in ("DSC", "NSD")}


def format_differences(diffs: dict[str, dict[int, float]], official: Scores) -> str:
    """Per organ: the largest differences, how many cases FLARE scored with 0 < DSC < 1, how many of those had
    DSC in [0.1, 0.2) (NSD cleared) and how many had 0 < NSD < 1 (where the tolerance and the areas matter)."""
    lines = [f"{'organ':<22}{'max|dDSC|':>11}{'max|dNSD|':>11}{'0<DSC<1':>9}{'[0.1,0.2)':>10}{'0<NSD<1':>9}"]
    for label in LABELS:
        dscs = [c["DSC"][label] for c in official.values()]
        nsds = [c["NSD"][label] for c in official.values()]
        lines.append(f"{FLARE_ORGANS[label]:<22}{diffs['DSC'][label]:>11.2e}{diffs['NSD'][label]:>11.2e}"
                     f"{sum(0 < d < 1 for d in dscs):>9}{sum(0.1 <= d < 0.2 for d in dscs):>10}"
                     f"{sum(0 < n < 1 for n in nsds):>9}")
    return "\n".join(lines)


def compare(pairs: list[Pair], folder: Path) -> tuple[dict, Scores, Scores, float, float]:
    ref_dir, pred_dir = write_pairs(pairs, folder)
    official, official_seconds = run_official(ref_dir, pred_dir, folder / "official.csv")
    ours, our_seconds = run_ours(ref_dir, pred_dir)
    return differences(official, ours), official, ours, official_seconds, our_seconds


def timing(folder: Path, repeats: int = 3) -> tuple[list[float], list[float]]:
    """Seconds of FLARE's script and of ours on one 200 x 200 x 100 IRCADb case (mixed errors), `repeats` times."""
    reference = next(r for r in load_references("full") if r.name == "ircadb_box200")
    pair = Pair("timing_case", reference, mixed(reference.labels, np.random.default_rng(0)), reference.spacing,
                reference.direction)
    ref_dir, pred_dir = write_pairs([pair], folder)
    official = [run_official(ref_dir, pred_dir, folder / "timing.csv")[1] for _ in range(repeats)]
    ours = [run_ours(ref_dir, pred_dir)[1] for _ in range(repeats)]
    return official, ours


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--selection", choices=sorted(SELECTIONS), default="full")
    parser.add_argument("--timing-only", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="timing runs of each (default 3)")
    args = parser.parse_args(argv)
    if not OFFICIAL_RUNNER.is_file():
        raise SystemExit(f"FLARE's script not found at {OFFICIAL_RUNNER}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.timing_only:
            pairs = build_pairs(args.selection)
            diffs, official, _, official_seconds, our_seconds = compare(pairs, Path(tmp) / "pairs")
            print(f"{len(pairs)} reference/prediction pairs ({args.selection} selection)")
            print(format_differences(diffs, official))
            print(f"largest |difference| overall: DSC {max(diffs['DSC'].values()):.2e}, "
                  f"NSD {max(diffs['NSD'].values()):.2e}")
            print(f"all pairs: FLARE's script {official_seconds:.1f} s, ours {our_seconds:.1f} s")
        official_times, our_times = timing(Path(tmp) / "timing", args.repeats)
        print(f"200 x 200 x 100 case (IRCADb, 6 organs, mixed errors), {args.repeats} runs each: FLARE's script "
              f"median {np.median(official_times):.2f} s ({', '.join(f'{t:.2f}' for t in official_times)}), ours "
              f"median {np.median(our_times):.2f} s ({', '.join(f'{t:.2f}' for t in our_times)})")


if __name__ == "__main__":
    main()
