"""The files of one case: where they go, companion files (masks, preview, colour table), DICOM-SEG."""
