"""The 13 FLARE organs: label ids, names and the NSD tolerances of FLARE's evaluation (mm)."""
from __future__ import annotations

FLARE_ORGANS: dict[int, str] = {
    1: "liver", 2: "right_kidney", 3: "spleen", 4: "pancreas", 5: "aorta", 6: "inferior_vena_cava",
    7: "right_adrenal_gland", 8: "left_adrenal_gland", 9: "gallbladder", 10: "esophagus", 11: "stomach",
    12: "duodenum", 13: "left_kidney",
}
NUM_CLASSES = len(FLARE_ORGANS) + 1  # with background

NSD_TOLERANCE_MM: dict[int, float] = {
    1: 5, 2: 3, 3: 3, 4: 5, 5: 2, 6: 2, 7: 2, 8: 2, 9: 2, 10: 3, 11: 5, 12: 7, 13: 3,
}

# scored only on the slices where the reference labels them (FLARE's rule for tubular organs)
Z_RANGE_RESTRICTED = (5, 6, 10)


def dataset_json_labels() -> dict[str, int]:
    """The `labels` entry of an nnU-Net dataset.json for FLARE-labelled data."""
    return {"background": 0, **{name: i for i, name in FLARE_ORGANS.items()}}


def flare_dataset_json(name: str, description: str, num_training: int, file_ending: str = ".nii.gz",
                       **extra: object) -> dict:
    """An nnU-Net raw dataset.json for CT with the 13 FLARE organs; `extra` entries follow nnU-Net's own keys."""
    return {"name": name, "description": description, "channel_names": {"0": "CT"},
            "labels": dataset_json_labels(), "numTraining": num_training, "file_ending": file_ending, **extra}
