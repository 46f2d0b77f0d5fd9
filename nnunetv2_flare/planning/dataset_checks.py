"""What nnUNetv2_flare_plan_and_preprocess checks before the (slow) fingerprint: every refusal is a `UsageError`
(one line naming the fix) and nothing has been written when it comes.

- nnU-Net's folders are set;
- the dataset exists in nnUNet_raw, once, with a readable dataset.json;
- one CT channel (the method's normalization and intensity statistics are CT's);
- the labels are the FLARE-13 with FLARE's ids: the locator's abdomen target, the pseudo-label priority and the
  evaluation all assume liver = 1, ..., left kidney = 13. Names are compared after lower-casing and turning spaces
  and hyphens into underscores, so "right kidney" or "Right-Kidney" are the same organ.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from nnunetv2_flare.errors import UsageError
from nnunetv2_flare.labels import FLARE_ORGANS

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed")
# spellings of FLARE organ names seen in public FLARE dataset.json files
ALIASES = {"ivc": "inferior_vena_cava", "postcava": "inferior_vena_cava", "gall_bladder": "gallbladder",
           "oesophagus": "esophagus"}


def require_environment(*names: str) -> None:
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise UsageError(f"set the environment variable(s) {', '.join(missing)} (nnU-Net's folders: raw data, "
                         f"preprocessed data, results) before planning; see nnU-Net's documentation/"
                         f"setting_up_paths.md")


def raw_dataset_folder(dataset_id: int) -> Path:
    """nnUNet_raw/Dataset<id>_<name>, found by id as nnU-Net does (exactly one such folder)."""
    raw = Path(os.environ["nnUNet_raw"])
    if not raw.is_dir():
        raise UsageError(f"nnUNet_raw={raw} is not a folder; point it at nnU-Net's raw data folder.")
    matches = sorted(p for p in raw.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir())
    if not matches:
        raise UsageError(f"no dataset with id {dataset_id} in nnUNet_raw={raw} (expected a folder "
                         f"Dataset{dataset_id:03d}_<name>); check -d.")
    if len(matches) > 1:
        raise UsageError(f"more than one dataset with id {dataset_id} in {raw} "
                         f"({', '.join(p.name for p in matches)}); give each dataset its own id.")
    return matches[0]


def read_dataset_json(folder: Path) -> dict:
    path = folder / "dataset.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path} is missing; every nnU-Net raw dataset needs one.") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} is not readable JSON ({type(e).__name__}: {e}); fix the file.") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a JSON object; fix the file.")
    return data


def organ_key(name: object) -> str:
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    return ALIASES.get(key, key)


def require_flare_labels(dataset_json: dict, dataset_name: str) -> None:
    """The 13 FLARE organs with FLARE's ids, plus background 0."""
    labels = dataset_json.get("labels")
    expected = {0: "background", **{i: organ_key(n) for i, n in FLARE_ORGANS.items()}}
    given: dict[int, str] = {}
    if isinstance(labels, dict):
        for name, value in labels.items():
            if isinstance(value, int) and not isinstance(value, bool):
                given[value] = organ_key(name)
            else:  # nnU-Net's region-based training (lists of ids) is a different task
                given = {}
                break
    if given != expected:
        wrong = sorted({*expected, *given} - {i for i in expected if given.get(i) == expected[i]})
        shown = ", ".join(f"{i}: {given.get(i, 'missing')}" for i in wrong[:4]) or "no labels"
        raise UsageError(f"{dataset_name}/dataset.json: the labels are not FLARE's 13 organs ({shown}); FlarePlans "
                         f"needs \"labels\" {{\"background\": 0, \"liver\": 1, ..., \"left_kidney\": 13}} as in "
                         f"nnunetv2_flare.labels.dataset_json_labels().")


def check_raw_dataset(dataset_id: int) -> str:
    """All checks of one dataset; returns its name (Dataset<id>_<name>)."""
    from nnunetv2_flare.planning.flare_planner import require_single_ct_channel

    require_environment(*NNUNET_FOLDERS)
    folder = raw_dataset_folder(dataset_id)
    dataset_json = read_dataset_json(folder)
    try:
        require_single_ct_channel(dataset_json, folder.name)
    except (ValueError, RuntimeError) as e:  # nnU-Net's lookup of an unknown channel name
        raise UsageError(str(e)) from None
    require_flare_labels(dataset_json, folder.name)
    return folder.name
