"""DICOM in, DICOM out (--output_type dicom_seg): a DICOM Segmentation object that references the source CT series,
one segment per organ found, named as in the model's dataset.json and coded with SNOMED CT (laterality as a
modifier, as dcmqi and TotalSegmentator do). Written with highdicom, an optional extra:
`pip install "nnunetv2-flare[dicom]"`.

The labels are on the grid SimpleITK read the series onto, slice k being the k-th file of
reading.dicom_series_files, so frame k of the pixel array belongs to that file's instance.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_flare import __version__
from nnunetv2_flare.atomic_io import atomic_write
from nnunetv2_flare.inference.inputs.reading import InputCase, dicom_series_files
from nnunetv2_flare.inference.outputs.label_colors import label_colors

# label name -> (SNOMED CT code, meaning, laterality or None); names as in FLARE's and common nnU-Net dataset.jsons
SNOMED_ORGANS: dict[str, tuple[str, str, str | None]] = {
    "liver": ("10200004", "Liver", None), "spleen": ("78961009", "Spleen", None),
    "kidney": ("64033007", "Kidney", None), "right_kidney": ("64033007", "Kidney", "right"),
    "left_kidney": ("64033007", "Kidney", "left"), "pancreas": ("15776009", "Pancreas", None),
    "aorta": ("15825003", "Aorta", None), "inferior_vena_cava": ("64131007", "Inferior vena cava", None),
    "adrenal_gland": ("23451007", "Adrenal gland", None),
    "right_adrenal_gland": ("23451007", "Adrenal gland", "right"),
    "left_adrenal_gland": ("23451007", "Adrenal gland", "left"), "gallbladder": ("28231008", "Gallbladder", None),
    "esophagus": ("32849002", "Esophagus", None), "stomach": ("69695003", "Stomach", None),
    "duodenum": ("38848004", "Duodenum", None),
}
LATERALITY = {"right": ("24028007", "Right"), "left": ("7771000", "Left")}
ANATOMICAL_STRUCTURE = ("91723000", "Anatomical Structure")  # segmentation property category (CID 7150)
TISSUE = ("85756007", "Tissue")  # the type of a label this table does not know (still a valid segment)


def highdicom_module():
    try:
        import highdicom
    except ImportError:
        raise RuntimeError('--output_type dicom_seg needs highdicom: pip install "nnunetv2-flare[dicom]"') from None
    return highdicom


def check_dicom_inputs(cases: Sequence[InputCase]) -> None:
    """DICOM-SEG references source instances: refuse, before any work, inputs that are not DICOM."""
    highdicom_module()
    not_dicom = [str(c.path) for c in cases if not c.is_dicom]
    if not_dicom:
        raise ValueError(f"--output_type dicom_seg needs DICOM input (a series folder or one of its files); not "
                         f"DICOM: {', '.join(not_dicom[:3])}{' ...' if len(not_dicom) > 3 else ''}.")


def with_instance_uids(dataset):
    """Anonymizers sometimes blank SOPClassUID / SOPInstanceUID in the data set and keep them in the file meta
    (the TotalSegmentator example series does): the references then use the file meta's, in memory only."""
    meta = getattr(dataset, "file_meta", None)
    for tag, meta_tag in (("SOPClassUID", "MediaStorageSOPClassUID"),
                          ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        if not str(dataset.get(tag, "") or "").strip() and meta is not None and meta.get(meta_tag):
            setattr(dataset, tag, meta.get(meta_tag))
    return dataset


def segment_description(number: int, name: str, rgb: tuple[int, int, int], algorithm):
    hd = highdicom_module()
    from pydicom.sr.coding import Code
    code, meaning, side = SNOMED_ORGANS.get(name.lower().replace(" ", "_"), (*TISSUE, None))
    description = hd.seg.SegmentDescription(
        segment_number=number, segment_label=name[:64],
        segmented_property_category=Code(ANATOMICAL_STRUCTURE[0], "SCT", ANATOMICAL_STRUCTURE[1]),
        segmented_property_type=Code(code, "SCT", meaning), algorithm_type="AUTOMATIC",
        algorithm_identification=algorithm, display_color=hd.color.CIELabColor.from_rgb(*rgb))
    if side:
        modifier = hd.sr.CodedConcept(LATERALITY[side][0], "SCT", LATERALITY[side][1])
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [modifier]
    return description


def with_study_uid(datasets: list, warnings: list[str]) -> list:
    """A DICOM-SEG belongs to its source's study: StudyInstanceUID is required. Where an anonymizer blanked it, the
    source gets one new UID (in memory only) and the SEG with it, with a warning; a blank SeriesInstanceUID cannot
    be made up (the SEG's reference to the series would point nowhere), so it is only warned about."""
    hd = highdicom_module()
    if not all(str(ds.get("StudyInstanceUID", "") or "").strip() for ds in datasets):
        uid = hd.UID()
        for ds in datasets:
            ds.StudyInstanceUID = uid
        warnings.append(f"The source series has no StudyInstanceUID (blanked by an anonymizer?): the DICOM-SEG got "
                        f"a new one, {uid}, so an archive files it in a study of its own.")
    if not str(datasets[0].get("SeriesInstanceUID", "") or "").strip():
        warnings.append("The source series has no SeriesInstanceUID: the DICOM-SEG's reference to it holds an empty "
                        "series UID (its frames still reference each slice by SOPInstanceUID).")
    return datasets


def write_dicom_seg(labels: sitk.Image, source: str | os.PathLike, label_names: dict[int, str],
                    path: str | os.PathLike, warnings: list[str]) -> bool:
    """A BINARY DICOM-SEG of the organs present in `labels` (the grid of the series at `source`), atomically.
    False (nothing written) when no organ was found: a DICOM-SEG needs at least one segment. What the source
    lacks (with_study_uid) goes into `warnings`."""
    hd = highdicom_module()
    import pydicom

    files = dicom_series_files(source)
    datasets = [with_instance_uids(pydicom.dcmread(f, stop_before_pixels=True)) for f in files]
    array = sitk.GetArrayViewFromImage(labels)
    if array.shape != (len(datasets), int(datasets[0].Rows), int(datasets[0].Columns)):
        raise RuntimeError(f"labels {array.shape} do not match the DICOM series ({len(datasets)} slices of "
                           f"{datasets[0].Rows} x {datasets[0].Columns})")
    present = [int(v) for v in np.unique(array) if v and int(v) in label_names]
    if not present:
        return False
    with_study_uid(datasets, warnings)
    colors = label_colors(label_names)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="nnunetv2-flare", version=__version__,
        family=hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence"))
    descriptions = [segment_description(k + 1, label_names[v], colors[v], algorithm) for k, v in enumerate(present)]
    masks = np.stack([array == v for v in present], axis=-1).astype(np.uint8)  # frames x rows x cols x segments
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=masks, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="nnunetv2-flare",
        manufacturer_model_name="FLARE two-phase cascade", software_versions=__version__,
        device_serial_number="none", series_description="nnunetv2-flare organs")
    atomic_write(path, lambda tmp: seg.save_as(str(tmp)))
    return True
