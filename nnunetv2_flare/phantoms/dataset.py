"""Write phantoms as an nnU-Net raw dataset: imagesTr, labelsTr, imagesTs, labelsTs and dataset.json."""
from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nnunetv2_flare.atomic_io import write_image_atomic, write_json_atomic
from nnunetv2_flare.labels import flare_dataset_json
from nnunetv2_flare.phantoms.generator import Randomisation, make_phantom_arrays

DATASET_NAME = "FlarePhantoms"
FILE_ENDING = ".nii.gz"
_TRAIN, _TEST = 0, 1  # seed streams: test cases never share a seed with training cases


def dataset_folder_name(dataset_id: int) -> str:
    return f"Dataset{dataset_id:03d}_{DATASET_NAME}"


def case_seed(seed: int, split: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), split, index])


def _write_case(job: tuple[Path, Path, str, np.random.SeedSequence, float | str, str | None, Randomisation | None]
                ) -> dict:
    images_dir, labels_dir, case, seed, scale, fov, randomisation = job
    phantom = make_phantom_arrays(seed, scale, fov, randomisation=randomisation)
    image, label = phantom.to_sitk()
    # the label last: a case whose label exists is complete (the image was renamed into place before it)
    write_image_atomic(image, images_dir / f"{case}_0000{FILE_ENDING}")
    write_image_atomic(label, labels_dir / f"{case}{FILE_ENDING}")
    return {"case": case, "size": list(image.GetSize()), "spacing": list(image.GetSpacing()), **phantom.info}


def write_phantom_dataset(dataset_id: int, num_training: int, num_test: int = 0, seed: int = 0,
                          output_folder: str | os.PathLike | None = None, scale: float | str = 1.0,
                          fov: str | None = None, num_processes: int = 1, progress: bool = True,
                          randomisation: Randomisation | None = None) -> Path:
    """Write `num_training` + `num_test` phantoms as `DatasetXXX_FlarePhantoms` in `output_folder` (default:
    $nnUNet_raw). Case i of a split is the same phantom for the same `seed`, whatever the other arguments'
    counts. `randomisation` (truncated fields of view, synthetic contrast) applies to the training cases only: the
    held-out cases stay realistic phantoms, the ones accuracy is reported on. Returns the dataset folder."""
    randomisation = randomisation or Randomisation()
    if num_training < 1:
        raise ValueError("num_training must be at least 1")
    if output_folder is None:
        output_folder = os.environ.get("nnUNet_raw")
        if not output_folder:
            raise RuntimeError("nnUNet_raw is not set: export nnUNet_raw=/path/to/nnUNet_raw (see nnU-Net's "
                               "documentation on paths) or pass an output folder (-o)")
    folder = Path(output_folder) / dataset_folder_name(dataset_id)
    jobs = []
    for split, count, images, labels, prefix, randomised in (
            (_TRAIN, num_training, "imagesTr", "labelsTr", "phantom", randomisation),
            (_TEST, num_test, "imagesTs", "labelsTs", "phantomTs", Randomisation())):
        if count == 0:
            continue
        (folder / images).mkdir(parents=True, exist_ok=True)
        (folder / labels).mkdir(parents=True, exist_ok=True)
        jobs += [(folder / images, folder / labels, f"{prefix}_{i:04d}", case_seed(seed, split, i), scale, fov,
                  randomised)
                 for i in range(count)]
    if num_processes > 1:
        with ProcessPoolExecutor(num_processes) as pool:
            cases = list(tqdm(pool.map(_write_case, jobs), total=len(jobs), desc="phantoms", disable=not progress))
    else:
        cases = [_write_case(job) for job in tqdm(jobs, desc="phantoms", disable=not progress)]
    write_json_atomic(flare_dataset_json(
        DATASET_NAME, "Synthetic abdominal CT phantoms with the 13 FLARE organs (nnunetv2_flare.phantoms)",
        num_training, FILE_ENDING,
        phantom_settings={"seed": seed, "scale": scale, "fov": fov or "random", "num_test": num_test,
                          "training_randomisation": dataclasses.asdict(randomisation)},
    ), folder / "dataset.json")
    write_json_atomic(cases, folder / "phantom_cases.json")
    return folder
