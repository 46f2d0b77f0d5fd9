"""tools/resolution_ceiling.py: labels survive their own grid intact and lose more on coarser grids."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]


def write_labels(folder: Path, spacing_xyz: tuple[float, float, float]) -> None:
    z, y, x = np.mgrid[:16, :40, :40]
    labels = np.zeros((16, 40, 40), np.uint8)
    labels[(z - 8) ** 2 * 4 + (y - 20) ** 2 + (x - 14) ** 2 < 81] = 3       # spleen: a ball of radius ~9 voxels
    labels[(y - 20) ** 2 + (x - 31) ** 2 < 6] = 5                            # aorta: a thin tube along z
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(spacing_xyz)
    folder.mkdir(exist_ok=True)
    sitk.WriteImage(image, str(folder / f"case_{spacing_xyz[2]:g}.nii.gz"))


def ceiling_table(folder: Path, *arguments: str) -> dict[str, list[float]]:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "resolution_ceiling.py"), str(folder), *arguments],
                          capture_output=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.strip("|").split("|") for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    return {cells[0].strip(): [float(c) if c.strip() != "-" else None for c in cells[1:]] for cells in rows}


def test_own_grid_keeps_labels_and_coarser_grids_lose_more(tmp_path):
    write_labels(tmp_path / "own", (2.0, 2.0, 4.0))
    exact = ceiling_table(tmp_path / "own", "--spacing", "4,2,2", "--output_stride", "1")
    assert exact["spleen"] == [1.0] and exact["aorta"] == [1.0]
    write_labels(tmp_path / "labels", (2.0, 2.0, 4.0))
    write_labels(tmp_path / "labels", (2.5, 2.5, 5.0))
    table = ceiling_table(tmp_path / "labels", "--spacing", "4,2,2", "--spacing", "4,4,4", "--spacing", "4,6,6")
    spleen, aorta = table["spleen"], table["aorta"]
    assert 1.0 > spleen[0] > spleen[1] > spleen[2] > 0.3
    assert aorta[0] > aorta[2]
    assert aorta[2] < spleen[2]  # a thin tube suffers more than a ball
    assert table["liver"] == [None, None, None]  # in no reference: "-", not a number
