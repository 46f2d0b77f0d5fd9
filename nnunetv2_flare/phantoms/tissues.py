"""Tissue classes of the phantoms and their CT numbers (HU) per contrast phase.

Values follow typical clinical CT: the organs' ranges overlap on purpose (liver vs spleen in the portal-venous phase,
pancreas vs duodenal and bowel wall, adrenal vs stranded fat), so that intensity alone cannot separate them.
"""
from __future__ import annotations

from enum import IntEnum

import numpy as np

PHASES = ("non_contrast", "arterial", "portal_venous", "delayed")
PHASE_PROBABILITIES = (0.15, 0.2, 0.5, 0.15)


class T(IntEnum):
    AIR = 0
    LUNG = 1
    FAT = 2
    FAT_VISCERAL = 3
    STRANDING = 4
    MUSCLE = 5
    BONE_CORTICAL = 6
    BONE_CANCELLOUS = 7
    DISC = 8
    CARTILAGE = 9
    CSF = 10
    LIVER = 11
    SPLEEN = 12
    KIDNEY_CORTEX = 13
    KIDNEY_MEDULLA = 14
    URINE = 15
    PANCREAS = 16
    ADRENAL = 17
    BILE = 18
    GI_WALL = 19
    GI_FLUID = 20
    GI_FOOD = 21
    ORAL_CONTRAST = 22
    STOOL = 23
    ARTERY = 24
    VEIN = 25
    PORTAL = 26
    HEART_MUSCLE = 27
    HEART_BLOOD = 28
    TABLE = 29
    TABLE_SHELL = 30
    CALCIFICATION = 31
    ESOPHAGUS_WALL = 32
    RIB = 33


# mean HU per phase (non-contrast, arterial, portal-venous, delayed) and texture amplitude (HU)
_TABLE: dict[T, tuple[tuple[float, float, float, float], float]] = {
    T.AIR: ((-1000, -1000, -1000, -1000), 4),
    T.LUNG: ((-850, -850, -850, -850), 60),
    T.FAT: ((-105, -105, -105, -105), 12),
    T.FAT_VISCERAL: ((-95, -95, -95, -95), 18),
    T.STRANDING: ((-20, -10, -5, -10), 25),
    T.MUSCLE: ((50, 55, 60, 58), 10),
    T.BONE_CORTICAL: ((900, 900, 900, 900), 150),
    T.BONE_CANCELLOUS: ((230, 230, 230, 230), 60),
    T.DISC: ((85, 85, 90, 90), 10),
    T.CARTILAGE: ((140, 140, 140, 140), 30),
    T.CSF: ((10, 10, 12, 12), 6),
    T.LIVER: ((58, 75, 110, 92), 9),
    T.SPLEEN: ((50, 125, 118, 96), 12),
    T.KIDNEY_CORTEX: ((35, 190, 170, 140), 12),
    T.KIDNEY_MEDULLA: ((32, 85, 165, 170), 12),
    T.URINE: ((8, 8, 12, 450), 6),
    T.PANCREAS: ((42, 112, 95, 80), 16),
    T.ADRENAL: ((25, 65, 60, 50), 12),
    T.BILE: ((10, 10, 12, 12), 5),
    T.GI_WALL: ((42, 90, 96, 80), 12),
    T.GI_FLUID: ((12, 12, 14, 14), 8),
    T.GI_FOOD: ((35, 35, 35, 35), 45),
    T.ORAL_CONTRAST: ((300, 300, 300, 300), 40),
    T.STOOL: ((-150, -150, -150, -150), 260),
    T.ARTERY: ((42, 320, 170, 125), 10),
    T.VEIN: ((40, 70, 150, 118), 10),
    T.PORTAL: ((40, 110, 175, 122), 10),
    T.HEART_MUSCLE: ((45, 110, 100, 90), 10),
    T.HEART_BLOOD: ((42, 260, 160, 120), 12),
    T.TABLE: ((-450, -450, -450, -450), 40),
    T.TABLE_SHELL: ((250, 250, 250, 250), 40),
    T.CALCIFICATION: ((650, 650, 650, 650), 200),
    T.ESOPHAGUS_WALL: ((45, 75, 85, 75), 10),
    T.RIB: ((450, 450, 450, 450), 120),
}
NUM_TISSUES = len(T)
_ENHANCING = {T.LIVER, T.SPLEEN, T.KIDNEY_CORTEX, T.KIDNEY_MEDULLA, T.PANCREAS, T.ADRENAL, T.GI_WALL, T.ARTERY,
              T.VEIN, T.PORTAL, T.HEART_MUSCLE, T.HEART_BLOOD, T.ESOPHAGUS_WALL, T.MUSCLE, T.STRANDING}


def sample_tissue_table(rng: np.random.Generator, phase: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-case lookup tables (mean HU, texture amplitude) indexed by tissue id: the phase's values with a per-case
    contrast strength (bolus timing, dose) and per-tissue jitter."""
    p = PHASES.index(phase)
    enhancement_strength = rng.uniform(0.65, 1.35)
    mean = np.zeros(NUM_TISSUES, np.float32)
    amplitude = np.zeros(NUM_TISSUES, np.float32)
    for tissue, (values, amp) in _TABLE.items():
        value = values[p]
        if tissue in _ENHANCING:
            value = values[0] + (value - values[0]) * enhancement_strength
        mean[tissue] = value + rng.normal(0, 7 if abs(value) < 500 else 40)
        amplitude[tissue] = amp * rng.uniform(0.7, 1.4)
    mean[T.STRANDING] = rng.uniform(-60, 35)  # fat stranding: anything from oedematous fat to soft tissue
    mean[T.ORAL_CONTRAST] = rng.uniform(150, 650)
    if phase == "delayed":
        mean[T.URINE] = rng.uniform(150, 900)  # excreted contrast in the collecting system and bladder
    mean[T.AIR] = -1000.0
    return mean, amplitude


# tissues whose CT numbers a synthetic-contrast case draws afresh: every soft tissue and fluid; air, lung, bone,
# calcium, the table and bowel gas keep their values (they fix the scale the network normalises by)
_RANDOMISED = tuple(t for t in T if t not in {T.AIR, T.LUNG, T.BONE_CORTICAL, T.BONE_CANCELLOUS, T.RIB, T.TABLE,
                                               T.TABLE_SHELL, T.CALCIFICATION, T.STOOL})
SYNTHETIC_HU_RANGE = (-120.0, 280.0)


def randomise_tissue_table(rng: np.random.Generator, mean: np.ndarray, amplitude: np.ndarray) -> None:
    """SynthSeg-style contrast, in place: each soft tissue's mean drawn uniformly from SYNTHETIC_HU_RANGE and its
    texture scaled by 0.5-2, independently, so that no organ can be told by its CT number, only by its shape and
    neighbours (SynthSeg: Billot et al., Medical Image Analysis 2023, random Gaussian intensities per label)."""
    low, high = SYNTHETIC_HU_RANGE
    for tissue in _RANDOMISED:
        mean[tissue] = rng.uniform(low, high)
        amplitude[tissue] *= rng.uniform(0.5, 2.0)
