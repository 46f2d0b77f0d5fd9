"""Per-organ volume and intensity statistics (TotalSegmentator's --statistics) for the JSON report."""
from __future__ import annotations

from typing import Sequence

import numpy as np

PERCENTILES = (5, 25, 50, 75, 95)


def organ_statistics(ct: np.ndarray, labels: np.ndarray, label_names: dict[int, str],
                     voxel_ml: float) -> dict[str, dict]:
    """For each named label: volume (mL), voxel count and the HU inside it (mean, std, percentiles 5..95).

    `ct` and `labels` are the same voxels (any crop that holds every labelled voxel: the cascade passes its crop box,
    so the scan outside it is never scanned). An organ not found has volume 0 and None for the intensities."""
    out: dict[str, dict] = {}
    flat_labels = labels.ravel()
    foreground = np.flatnonzero(flat_labels)  # one sort of the labelled voxels instead of a mask per organ
    order = foreground[np.argsort(flat_labels[foreground], kind="stable")]
    sorted_labels = flat_labels[order]
    flat_ct = ct.ravel()
    for label, name in sorted(label_names.items()):
        lo, hi = np.searchsorted(sorted_labels, [label, label + 1])
        values = flat_ct[order[lo:hi]].astype(np.float64)
        entry: dict = {"voxels": int(values.size), "volume_ml": round(values.size * voxel_ml, 3)}
        if values.size:
            entry.update(mean_hu=round(float(values.mean()), 2), std_hu=round(float(values.std()), 2),
                         **{f"p{p}_hu": round(float(v), 2) for p, v in zip(PERCENTILES,
                                                                             np.percentile(values, PERCENTILES))})
        else:
            entry.update(mean_hu=None, std_hu=None, **{f"p{p}_hu": None for p in PERCENTILES})
        out[name] = entry
    return out


def subset_ids(label_names: dict[int, str], names: Sequence[str]) -> list[int]:
    """Label ids of the organ names in `names` (--roi_subset), compared as plan_and_preprocess compares them:
    ignoring case, with spaces and hyphens as underscores (Liver, right-kidney, IVC); one-line error naming the
    valid names."""
    from nnunetv2_flare.planning.dataset_checks import organ_key

    by_name = {organ_key(n): i for i, n in label_names.items()}
    unknown = [n for n in names if organ_key(n) not in by_name]
    if unknown:
        raise ValueError(f"--roi_subset: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a label "
                         f"of this model; its labels are: {' '.join(label_names.values())}.")
    return sorted({by_name[organ_key(n)] for n in names})
