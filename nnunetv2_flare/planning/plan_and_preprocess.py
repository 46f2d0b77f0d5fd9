"""`nnUNetv2_flare_plan_and_preprocess`: fingerprint, FlarePlans and the training data of both phases.

nnU-Net's own `nnUNetv2_plan_and_preprocess -pl` cannot find planners outside nnunetv2, so this command runs
nnU-Net's fingerprint extraction, this package's planner and this package's preprocessors directly.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

from nnunetv2.configuration import default_num_processes
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
from tqdm import tqdm

from nnunetv2_flare.atomic_io import atomic_write
from nnunetv2_flare.cli_errors import FlareArgumentParser, UsageError, run_command
from nnunetv2_flare.names import (
    DEFAULT_CONFIGURATIONS,
    LOCATOR_CONFIGURATION,
    LOCATOR_TRAINER,
    ORGAN_CONFIGURATION,
    ORGAN_NARROW_CONFIGURATION,
    ORGAN_TRAINER,
    PLANS,
)
from nnunetv2_flare.planning.abdomen_labels import ABDOMEN_REFERENCE_FOLDER, write_abdomen_references
from nnunetv2_flare.planning.dataset_checks import check_raw_dataset, read_dataset_json
from nnunetv2_flare.planning.flare_planner import FlarePlanner
from nnunetv2_flare.planning.preprocessors import FlareLocatorPreprocessor, training_preprocessor_class

PROG = "nnUNetv2_flare_plan_and_preprocess"


def copy_references(dataset_name: str, show_progress: bool = True) -> Path:
    """nnU-Net's gt_segmentations/: the raw labels, so validation works where only preprocessed data exist.
    Only files that are missing or older than the raw label are copied."""
    raw = Path(os.environ["nnUNet_raw"]) / dataset_name
    target = Path(os.environ["nnUNet_preprocessed"]) / dataset_name / "gt_segmentations"
    target.mkdir(parents=True, exist_ok=True)
    dataset_json = read_dataset_json(raw)
    dataset = get_filenames_of_train_images_and_targets(str(raw), dataset_json)
    for case, files in tqdm(sorted(dataset.items()), desc="Copying references", disable=not show_progress):
        src, dst = Path(files["label"]), target / f"{case}{dataset_json['file_ending']}"
        if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
            atomic_write(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))
    return target


def plan_and_preprocess(dataset_id: int, configurations: Sequence[str] = DEFAULT_CONFIGURATIONS,
                        num_processes: int = default_num_processes, verify_dataset_integrity: bool = False,
                        clean: bool = False, overwrite_plans: bool = False, preprocess: bool = True,
                        verbose: bool = False) -> Path:
    """Fingerprint (reused unless `clean`), FlarePlans.json, and the preprocessed training data of
    `configurations`. Returns the plans file."""
    if num_processes < 1:
        raise UsageError(f"-np must be at least 1, got {num_processes}")
    dataset_name = check_raw_dataset(dataset_id)  # every refusal before the (slow) fingerprint writes anything
    print(f"Fingerprint of {dataset_name}")
    extract_fingerprint_dataset(dataset_id, num_processes=num_processes,
                                check_dataset_integrity=verify_dataset_integrity, clean=clean, verbose=verbose)
    planner = FlarePlanner(dataset_id, overwrite_plans=overwrite_plans)
    planner.plan_experiment()
    plans_manager = PlansManager(str(planner.plans_file))
    unknown = [c for c in configurations if c not in plans_manager.available_configurations]
    if unknown:
        raise UsageError(f"unknown configuration(s) {unknown}; {PLANS} has "
                         f"{plans_manager.available_configurations}")
    if not preprocess:
        return planner.plans_file

    done_identifiers: set[str] = set()
    locator_prepared = False
    for name in configurations:
        configuration = plans_manager.get_configuration(name)
        if configuration.data_identifier in done_identifiers:
            print(f"{name}: shares the preprocessed data {configuration.data_identifier} (already done)")
            continue
        preprocessor_class = training_preprocessor_class(configuration.configuration)
        print(f"{name}: preprocessing with {preprocessor_class.__name__} into {configuration.data_identifier}")
        preprocessor = preprocessor_class(verbose=verbose)
        preprocessor.show_progress_bar = True
        preprocessor.run(dataset_id, name, planner.plans_identifier, num_processes=num_processes)
        done_identifiers.add(configuration.data_identifier)
        locator_prepared |= issubclass(preprocessor_class, FlareLocatorPreprocessor)

    references = copy_references(dataset_name)
    if locator_prepared:
        write_abdomen_references(references, references.parent / ABDOMEN_REFERENCE_FOLDER,
                                 plans_manager.image_reader_writer_class, planner.dataset_json["file_ending"])
    return planner.plans_file


def build_parser() -> argparse.ArgumentParser:
    p = FlareArgumentParser(
        prog=PROG,
        description=f"Dataset fingerprint, {PLANS} (configurations {', '.join(DEFAULT_CONFIGURATIONS)}) and "
                    f"preprocessing of the training data of both phases. Then train with nnUNetv2_train DATASET "
                    f"{LOCATOR_CONFIGURATION} all -tr {LOCATOR_TRAINER} -p {PLANS} (and {ORGAN_CONFIGURATION} / "
                    f"{ORGAN_TRAINER}) after export nnUNet_extTrainer=$(nnUNetv2_flare_ext_trainer_path).")
    p.add_argument("-d", nargs="+", type=int, required=True, help="dataset id(s), e.g. 220")
    p.add_argument("-c", nargs="+", default=list(DEFAULT_CONFIGURATIONS),
                   help=f"configurations to preprocess (default: {' '.join(DEFAULT_CONFIGURATIONS)}; "
                        f"{ORGAN_NARROW_CONFIGURATION} shares the data of {ORGAN_CONFIGURATION})")
    p.add_argument("-np", type=int, default=default_num_processes,
                   help=f"worker processes for fingerprint and preprocessing (default {default_num_processes}, "
                        f"nnU-Net's nnUNet_def_n_proc)")
    p.add_argument("--verify_dataset_integrity", action="store_true",
                   help="check the raw dataset (files, shapes, geometry, labels) first")
    p.add_argument("--clean", action="store_true", help="re-extract the fingerprint even if one exists")
    p.add_argument("--overwrite_plans", action="store_true",
                   help="replace the intensity statistics of an existing FlarePlans.json with the current "
                        "fingerprint's (models trained with the old plans then no longer match)")
    p.add_argument("--no_pp", action="store_true", help="plan only, do not preprocess")
    p.add_argument("--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        if args.np < 1:
            raise UsageError(f"-np must be at least 1, got {args.np}")
        for dataset_id in args.d:  # all datasets checked before the first one is planned
            check_raw_dataset(dataset_id)
        for dataset_id in args.d:
            plans_file = plan_and_preprocess(dataset_id, args.c, args.np, args.verify_dataset_integrity, args.clean,
                                             args.overwrite_plans, not args.no_pp, args.verbose)
            print(f"Done: {plans_file}")
    return run_command(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
