"""A randomized patient: body, bones, lungs, bowel, vessels and the 13 FLARE organs, painted in the anatomy frame.

Anatomy frame (mm): x to the patient's left, y to the back, z to the head (LPS); x = 0 on the midline, y = 0 at the
middle of the abdominal cavity, z = 0 near the renal hila. Positions below are those of an average adult; each case
scales them (build), warps them with a smooth random displacement, and jitters every organ's position, size,
orientation and shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnunetv2_flare.phantoms.painter import KEEP, Box, Painter, catmull_rom, rotation
from nnunetv2_flare.phantoms.tissues import T

LIVER, R_KIDNEY, SPLEEN, PANCREAS, AORTA, IVC, R_ADRENAL, L_ADRENAL, GALLBLADDER, ESOPHAGUS, STOMACH, DUODENUM, \
    L_KIDNEY = range(1, 14)

ESOPHAGUS_AORTA_GAP_MM = 2.0  # fat between the esophagus and the aorta, whatever the jitter

# inner body wall (inside the muscles): z level, half width, anterior and posterior half depth, average adult
_CAVITY_LEVELS = np.array([
    # z     a    b_ant b_post
    [520, 105, 70, 75], [380, 125, 85, 85], [200, 135, 95, 85], [60, 135, 95, 80], [0, 128, 92, 78],
    [-120, 125, 88, 72], [-200, 132, 80, 70], [-300, 115, 75, 70], [-420, 100, 65, 60]], float)


@dataclass
class Body:
    scale: np.ndarray          # (x, y, z) scaling of every template position
    fat_mm: float              # subcutaneous fat thickness (anterior, lateral)
    muscle_mm: float           # abdominal wall muscle thickness
    dome_right: float          # diaphragm dome heights (template z)
    dome_left: float
    warp_amplitude: np.ndarray  # (K, 3) smooth displacement field: amplitudes, wave vectors, phases
    warp_wave: np.ndarray
    warp_phase: np.ndarray
    spine_shift: float         # lateral offset of the spine (mild scoliosis / rotation)

    @staticmethod
    def sample(rng: np.random.Generator) -> "Body":
        k = 4
        directions = rng.normal(size=(k, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        return Body(
            scale=np.array([rng.uniform(0.86, 1.14), rng.uniform(0.86, 1.14), rng.uniform(0.88, 1.12)]),
            fat_mm=float(rng.choice([rng.uniform(6, 18), rng.uniform(18, 55)])),
            muscle_mm=rng.uniform(7, 14),
            dome_right=rng.uniform(160, 190), dome_left=rng.uniform(145, 175),
            warp_amplitude=rng.normal(0, 5.0, size=(k, 3)),
            warp_wave=directions * (2 * np.pi / rng.uniform(220, 420, size=(k, 1))),
            warp_phase=rng.uniform(0, 2 * np.pi, size=k),
            spine_shift=rng.normal(0, 4),
        )

    def at(self, x: float, y: float, z: float) -> np.ndarray:
        """Template position -> this patient's position (scaled, then smoothly warped)."""
        p = np.array([x, y, z], float) * self.scale
        return p + (self.warp_amplitude * np.sin(self.warp_wave @ p + self.warp_phase)[:, None]).sum(axis=0)

    def path(self, points, rng: np.random.Generator, jitter_mm: float = 3.0) -> np.ndarray:
        return np.array([self.at(*p) for p in points]) + rng.normal(0, jitter_mm, size=(len(points), 3))

    def cavity(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Half width, anterior and posterior half depth of the inner body wall at physical heights z."""
        zt = z / self.scale[2]
        levels = _CAVITY_LEVELS[::-1]
        a, b_ant, b_post = (np.interp(zt, levels[:, 0], levels[:, i]) for i in (1, 2, 3))
        return a * self.scale[0], b_ant * self.scale[1], b_post * self.scale[1]

    def spine_y(self, z: np.ndarray | float) -> np.ndarray:
        """Centre of the vertebral bodies (y) at physical height z: lumbar lordosis brings L3-L4 forward."""
        zt = np.asarray(z, float) / self.scale[2]
        return (48 - 10 * np.exp(-((zt + 90) / 90) ** 2) + 8 * np.clip((zt - 150) / 250, 0, 1)) * self.scale[1]

    def diaphragm_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height of the diaphragm over (x, y): two domes, lower at the periphery and in the posterior recesses."""
        sx, sy, sz = self.scale
        domes = []
        for top, cx in ((self.dome_right, -55.0), (self.dome_left, 55.0)):
            r2 = ((x / sx - cx) / 110) ** 2 + ((y / sy + 5) / 100) ** 2
            domes.append((top - 70 * r2) * sz)
        posterior = 35 * np.clip(y / sy / 80, 0, None) ** 2 * sz
        return np.maximum(domes[0], domes[1]) - posterior


def _superellipse(x, y, a, b_ant, b_post, power: float = 2.4):
    b = np.where(y < 0, b_ant, b_post)
    return np.abs(x / a) ** power + np.abs(y / b) ** power


def paint_body(p: Painter, body: Body, rng: np.random.Generator) -> None:
    """Air, subcutaneous fat, muscle wall, table, abdominal and thoracic cavities, diaphragm."""
    x, y, z = p.x[None, None, :], p.y[None, :, None], p.z[:, None, None]
    a, b_ant, b_post = (v.astype(np.float32)[:, None, None] for v in body.cavity(p.z))
    cavity = _superellipse(x, y, a, b_ant, b_post) <= 1
    wall = body.muscle_mm
    muscle = _superellipse(x, y, a + wall, b_ant + wall, b_post + 45) <= 1  # paraspinal muscles at the back
    fat = body.fat_mm
    outline = _superellipse(x, y, a + wall + fat, b_ant + wall + 1.3 * fat, b_post + 45 + 0.4 * fat) <= 1
    p.tissue[:] = T.AIR
    p.tissue[outline] = T.FAT
    p.tissue[muscle] = T.MUSCLE
    diaphragm = body.diaphragm_z(p.x[None, :], p.y[:, None]).astype(np.float32)[None]
    abdomen = cavity & (z < diaphragm)
    thorax = cavity & (z > diaphragm + 5)
    p.tissue[cavity] = T.MUSCLE  # the diaphragm: what remains between thorax and abdomen
    p.tissue[abdomen] = T.FAT_VISCERAL
    p.tissue[thorax] = T.LUNG
    p.confine_masks["abdomen"] = abdomen
    p.confine_masks["thorax"] = thorax
    p.confine_masks["body"] = outline
    # the table under the patient's back (y grows to the back), only where the field of view reaches it
    back = float((b_post + 45 + 0.4 * fat).max()) + rng.uniform(0, 6)
    thickness = rng.uniform(30, 60)
    box = p.box(np.array([-240, back, -1e4]), np.array([240, back + thickness, 1e4]))
    if box is not None:
        p.tissue[box] = T.TABLE
        shell = p.box(np.array([-240, back, -1e4]), np.array([240, back + 3, 1e4]))
        if shell is not None:
            p.tissue[shell] = T.TABLE_SHELL


def paint_skeleton(p: Painter, body: Body, rng: np.random.Generator) -> None:
    sx, sy, sz = body.scale
    # vertebrae from the sacrum to the upper chest, 34 mm apart (26 mm body + 8 mm disc)
    z_levels = np.arange(-175, 560, 34.0) * sz + rng.uniform(-8, 8)
    for zc in z_levels:
        if zc + 25 < p.z.min() or zc - 25 > p.z.max():
            continue
        yc = float(body.spine_y(zc))
        r = (24 if zc < 0 else 21 if zc < 150 else 17) * sx * rng.uniform(0.92, 1.08)
        c = np.array([body.spine_shift, yc, zc])
        p.blob(c, (r * 1.15, r, 17 * sz), T.DISC, 0, exponent=6)
        p.blob(c, (r * 1.15, r, 13 * sz), T.BONE_CORTICAL, 0, exponent=6)
        p.blob(c, (r * 1.15 - 2.5, r - 2.5, 12 * sz), T.BONE_CANCELLOUS, 0, exponent=6)
        canal = c + [0, r + 10, 0]
        p.blob(canal + [0, 4, 0], (16, 14, 14 * sz), T.BONE_CORTICAL, 0, exponent=4)  # arch
        p.blob(canal + [0, 26, -6 * sz], (5, 17, 9 * sz), T.BONE_CORTICAL, 0, rot=rotation(rx=-20))  # spinous
        for side in (-1, 1):
            p.blob(canal + [side * 28, -2, 0], (18, 5, 6 * sz), T.BONE_CORTICAL, 0,
                   rot=rotation(rz=side * 15))  # transverse processes
        p.blob(canal, (8, 8, 20 * sz), T.CSF, 0, exponent=4)
    # ribs: 12 pairs, from the spine around the wall, falling as they run forward
    a_w, b_ant_w, b_post_w = (v + body.muscle_mm * 0.5 for v in body.cavity(np.array([0.0])))
    for k in range(1, 13):
        z_head = (30 + 35 * (12 - k)) * sz
        if z_head - 120 > p.z.max() or z_head + 10 < p.z.min():
            continue
        theta_end = np.deg2rad(170 if k <= 7 else 150 if k <= 10 else 115 if k == 11 else 85)
        theta = np.linspace(np.deg2rad(12), theta_end, 40)
        drop = (40 + 5 * k) * sz
        zs = z_head - drop * (1 - np.cos(theta)) / 2
        a, b_ant, b_post = (v + body.muscle_mm * 0.5 for v in body.cavity(zs))
        ys = np.where(np.cos(theta) > 0, b_post * 0.75, b_ant) * np.cos(theta)
        for side in (-1, 1):
            xs = side * a * np.sin(theta)
            pts = np.stack([xs, ys, zs], axis=1)
            cartilage = theta > theta_end - np.deg2rad(35 if k <= 10 else 0)
            if (~cartilage).sum() >= 2:
                p.tube(pts[~cartilage], 5.5, T.RIB, 0, only_tissue=(T.MUSCLE, T.FAT, T.FAT_VISCERAL, T.LUNG))
            if cartilage.sum() >= 2:
                p.tube(pts[cartilage], 5.0, T.CARTILAGE, 0, only_tissue=(T.MUSCLE, T.FAT, T.FAT_VISCERAL, T.LUNG))
    # sternum and xiphoid
    top = 400 * sz
    p.tube([body.at(0, -b_ant_w[0] / sy + 4, 400), body.at(0, -b_ant_w[0] / sy + 2, 200)], 9, T.BONE_CANCELLOUS, 0)
    # pelvis: iliac wings, sacrum, femoral heads, pubis
    for side in (-1, 1):
        wing = body.at(side * 95, 30, -170)
        p.blob(wing, (10, 55, 50 * sz), T.BONE_CORTICAL, 0, rot=rotation(rz=side * 35, ry=side * -15))
        p.blob(wing, (6, 50, 45 * sz), T.BONE_CANCELLOUS, 0, rot=rotation(rz=side * 35, ry=side * -15))
        head = body.at(side * 88, 0, -280)
        p.blob(head, (25, 25, 25), T.BONE_CORTICAL, 0)
        p.blob(head, (22, 22, 22), T.BONE_CANCELLOUS, 0)
        p.tube([head, body.at(side * 125, 5, -320), body.at(side * 135, 5, -420)], 15, T.BONE_CORTICAL, 0)
        p.tube([body.at(side * 70, -60, -290), body.at(side * 8, -75, -300)], 9, T.BONE_CORTICAL, 0)
    sacrum = body.at(0, 70, -205)
    p.blob(sacrum, (48, 18, 45 * sz), T.BONE_CANCELLOUS, 0, rot=rotation(rx=-30))
    del top


def paint_thorax(p: Painter, body: Body, rng: np.random.Generator) -> None:
    heart = body.at(15, -30, 0) + [0, 0, body.dome_left * body.scale[2] + 60]
    rot = rotation(rz=-30, ry=15)
    p.blob(heart + [-6, 0, 0], (72, 60, 66), T.FAT_VISCERAL, 0, rot=rot, confine="thorax")
    p.blob(heart, (62, 50, 56), T.HEART_MUSCLE, 0, rot=rot, confine="thorax", modulation=rng.normal(0, 0.05, 9))
    p.blob(heart, (50, 38, 44), T.HEART_BLOOD, 0, rot=rot, confine="thorax")


def paint_bowel(p: Painter, body: Body, rng: np.random.Generator, content: int) -> None:
    """Colon and small-bowel loops: unlabelled, with walls like stomach and duodenum and air, fluid or contrast."""
    def lumen_of(air_fraction: float, fill: int):
        def lumen(box: Box) -> np.ndarray:
            _, y, _ = p.coordinates(box)
            air = (rng.random() < air_fraction)
            level = np.float32(y.min() + (y.max() - y.min()) * rng.uniform(0.2, 0.6))
            return np.where((y < level) & air, np.uint8(T.AIR), np.uint8(fill))
        return lumen

    sag = rng.uniform(-40, 30)
    colon = [(-85, -5, -140), (-95, 10, -60), (-90, 5, 0), (-80, -30, 35), (-40, -70, 15 + sag), (0, -75, sag),
             (50, -65, 25 + sag), (90, -10, 85), (100, 20, 40), (98, 22, -60), (95, 15, -130), (60, -25, -175),
             (10, -10, -205), (0, 55, -235), (0, 60, -320)]
    radii = rng.uniform(18, 30, size=len(colon))
    p.hollow_tube(body.path(colon, rng, 6), radii, 3.5, T.GI_WALL, lumen_of(0.8, T.STOOL), 0, confine="abdomen")
    # small bowel: random smooth walks filling the mesentery, jejunum up left, ileum down right
    for _ in range(int(rng.integers(9, 15))):
        start = np.array([rng.uniform(-70, 75), rng.uniform(-75, 10), rng.uniform(-200, 20)])
        steps = [start]
        direction = rng.normal(size=3)
        for _ in range(int(rng.integers(6, 12))):
            direction = direction / np.linalg.norm(direction) + rng.normal(0, 0.7, 3)
            step = 16 * direction / np.linalg.norm(direction)
            nxt = np.clip(steps[-1] + step, [-85, -85, -220], [85, 15, 30])
            steps.append(nxt)
        fill = content if rng.random() < 0.6 else T.GI_FLUID
        p.hollow_tube(body.path(steps, rng, 2), rng.uniform(9, 14), 2.5, T.GI_WALL, lumen_of(0.35, fill), 0,
                      confine="abdomen")
    bladder_fill = rng.uniform(0.5, 1.2)
    p.blob(body.at(0, -40, -270), np.array([45, 38, 35]) * bladder_fill, T.URINE, 0, confine="abdomen",
           modulation=rng.normal(0, 0.06, 9))


def paint_muscles(p: Painter, body: Body, rng: np.random.Generator) -> None:
    for side in (-1, 1):
        psoas = [(side * 30, 40, 30), (side * 40, 40, -40), (side * 52, 30, -120), (side * 62, 10, -200),
                 (side * 70, -15, -260)]
        p.tube(body.path(psoas, rng, 2), np.array([7, 14, 20, 22, 18]) * rng.uniform(0.8, 1.25), T.MUSCLE, 0)
        quadratus = [(side * 62, 72, 40), (side * 70, 72, -40), (side * 80, 65, -130)]
        p.tube(body.path(quadratus, rng, 2), np.array([8, 12, 9]), T.MUSCLE, 0, confine="abdomen")
        crus = [(side * 22, 30, 150), (side * 20, 28, 100), (side * 22, 30, 40), (side * 25, 38, -20)]
        p.tube(body.path(crus, rng, 1.5), np.array([4, 5, 6, 5]) * rng.uniform(0.8, 1.3), T.MUSCLE, 0)


def _kidney(p: Painter, body: Body, rng: np.random.Generator, side: int, label: int) -> np.ndarray:
    """Paints a kidney (cortex, medulla, sinus fat, pelvis); returns its upper pole position."""
    center = body.at(side * 68, 40, -5 if side < 0 else 12) + rng.normal(0, 5, 3)
    radii = np.array([27, 23, 55]) * rng.uniform(0.85, 1.15) * np.array([1, 1, rng.uniform(0.85, 1.15)])
    rot = rotation(ry=side * rng.uniform(-20, -8), rz=side * rng.uniform(20, 40), rx=rng.uniform(-10, 10))
    modulation = rng.normal(0, 0.04, 9)
    p.blob(center, radii, T.KIDNEY_CORTEX, label, rot=rot, modulation=modulation, confine="abdomen")
    p.blob(center, radii * [0.68, 0.6, 0.82], T.KIDNEY_MEDULLA, label, rot=rot, modulation=modulation,
           only_label=label)
    hilum = center + rot @ np.array([-side * radii[0] * 0.75, -radii[1] * 0.25, 0])
    p.blob(hilum, radii * [0.45, 0.35, 0.42], T.FAT_VISCERAL, 0, rot=rot, only_label=label)
    p.blob(hilum + rot @ np.array([side * 4, 0, 0]), radii * [0.25, 0.2, 0.2], T.URINE, 0, rot=rot)
    return center + rot @ np.array([0, 0, radii[2]])


def _adrenal(p: Painter, body: Body, rng: np.random.Generator, upper_pole: np.ndarray, side: int, label: int
             ) -> None:
    """An adrenal gland: a thin inverted Y above and medial to the kidney's upper pole, with stranding nearby."""
    base = upper_pole + np.array([-side * 12, -8 if side < 0 else -14, 16]) * body.scale + rng.normal(0, 3, 3)
    size = rng.uniform(0.8, 1.25)
    limb_angle = rng.uniform(20, 40)
    turn = rng.uniform(-15, 15) + (60 if side > 0 else -60)
    for spread in (-limb_angle, limb_angle):
        rot = rotation(rz=turn + spread, rx=rng.uniform(-15, 15))
        offset = rot @ np.array([0, 10 * size, 0])
        p.blob(base + offset, np.array([3.2, 13, 17]) * size, T.ADRENAL, label, rot=rot, confine="abdomen",
               modulation=rng.normal(0, 0.05, 9))
    # fat stranding: thin soft-tissue strands in the perirenal fat, the adrenal's look-alikes
    for _ in range(int(rng.integers(2, 6))):
        start = base + rng.normal(0, 18, 3)
        end = start + rng.normal(0, 18, 3)
        p.tube([start, (start + end) / 2 + rng.normal(0, 5, 3), end], rng.uniform(1.2, 2.5), T.STRANDING, 0,
               only_tissue=(T.FAT_VISCERAL,), confine="abdomen")


def paint_organs(p: Painter, body: Body, rng: np.random.Generator, content: int) -> None:
    def mod(sd: float = 0.07) -> np.ndarray:
        return rng.normal(0, sd, 9)

    size = lambda lo=0.85, hi=1.18: rng.uniform(lo, hi)  # noqa: E731
    # liver: right lobe, left lobe, caudate, variable inferior tip; conforms to the diaphragm and wall
    s = size()
    parts = [((-68, 5, 105), (78, 88, 70)), ((0, -45, 122), (62, 36, 36)), ((40, -42, 128), (38, 22, 24)),
             ((-22, 25, 108), (20, 20, 30)), ((-85, 10, 50), (36, 48, rng.uniform(30, 60)))]
    for center, radii in parts:
        p.blob(body.at(*center) + rng.normal(0, 4, 3), np.array(radii) * s, T.LIVER, LIVER,
               rot=rotation(*rng.normal(0, 8, 3)), modulation=mod(), confine="abdomen")
    # spleen, a crescent against the left posterior wall
    center = body.at(92, 42, 110) + rng.normal(0, 6, 3)
    rot = rotation(rz=rng.uniform(-50, -25), rx=rng.uniform(-15, 15))
    radii = np.array([26, 55, 50]) * size(0.7, 1.3)
    p.blob(center, radii, T.SPLEEN, SPLEEN, rot=rot, modulation=mod(), confine="abdomen")
    p.blob(center + rot @ np.array([-radii[0] * 1.25, 0, 0]), radii * [0.7, 0.6, 0.55], T.FAT_VISCERAL, 0,
           rot=rot, only_label=SPLEEN)
    # stomach: fundus under the left dome, body, antrum to the pylorus; air anteriorly above the fluid level
    distension = size(0.65, 1.3)
    stomach = body.path([(55, 25, 150), (65, 5, 122), (60, -25, 92), (45, -52, 62), (12, -62, 42),
                         (-15, -52, 45), (-30, -36, 52)], rng, 4)
    stomach_radii = np.array([36, 40, 36, 30, 23, 16, 11]) * distension

    def stomach_lumen(box: Box) -> np.ndarray:
        _, y, _ = p.coordinates(box)
        level = np.float32(stomach[:, 1].min() + rng.uniform(-10, 30) * distension)
        return np.where(y < level, np.uint8(T.AIR), np.uint8(content if rng.random() < 0.7 else T.GI_FOOD))
    p.hollow_tube(stomach, stomach_radii, rng.uniform(3.5, 6), T.GI_WALL, stomach_lumen, STOMACH, confine="abdomen")
    # duodenum: C-loop from the pylorus around the pancreatic head to the duodenojejunal flexure
    duodenum = body.path([(-30, -36, 52), (-50, -22, 56), (-62, -4, 46), (-64, 2, 20), (-58, 4, -6),
                          (-35, 0, -20), (-5, -10, -24), (20, -8, -16), (32, -6, 4), (38, -12, 16)], rng, 3)
    p.hollow_tube(duodenum, rng.uniform(10, 14, len(duodenum)), 2.5, T.GI_WALL,
                  lambda box: np.uint8(content if rng.random() < 0.5 else T.GI_FLUID), DUODENUM, confine="abdomen")
    # pancreas: head in the C-loop, neck in front of the portal confluence, body, tail to the splenic hilum
    pancreas = body.path([(-44, -8, 18), (-38, -8, 34), (-14, -22, 44), (15, -16, 52), (45, -2, 60), (66, 13, 68),
                          (82, 25, 76)], rng, 3)
    p.tube(pancreas, np.array([17, 15, 11, 12, 11, 10, 8]) * size(0.8, 1.2), T.PANCREAS, PANCREAS,
           confine="abdomen")
    p.tube(body.path([(-38, 0, 26), (-24, 6, 14)], rng, 2), 9 * size(0.8, 1.2), T.PANCREAS, PANCREAS,
           confine="abdomen")  # uncinate process
    # kidneys and adrenals
    upper_right = _kidney(p, body, rng, -1, R_KIDNEY)
    upper_left = _kidney(p, body, rng, 1, L_KIDNEY)
    _adrenal(p, body, rng, upper_right, -1, R_ADRENAL)
    _adrenal(p, body, rng, upper_left, 1, L_ADRENAL)
    # gallbladder under the liver, long axis from the fundus (front, low) to the neck (back, high)
    fill = size(0.55, 1.25)
    p.blob(body.at(-45, -40, 62) + rng.normal(0, 6, 3), np.array([15, 16, 34]) * fill, T.BILE, GALLBLADDER,
           rot=rotation(rx=rng.uniform(-55, -25), rz=rng.uniform(-25, 10)), modulation=mod(0.05),
           confine="abdomen")
    paint_vessels(p, body, rng)


def paint_vessels(p: Painter, body: Body, rng: np.random.Generator) -> None:
    spine_y = lambda zt: float(body.spine_y(zt * body.scale[2]) / body.scale[1])  # noqa: E731
    ax = 14 + rng.normal(0, 3)
    bifurcation = rng.uniform(-125, -95)
    aorta_pts = [(28, spine_y(420) - 12, 420), (24, spine_y(300) - 22, 300), (16, spine_y(160) - 32, 160),
                 (ax, spine_y(60) - 34, 60), (ax - 2, spine_y(-40) - 34, -40), (ax - 4, spine_y(bifurcation) - 30,
                                                                             bifurcation)]
    aorta = body.path(aorta_pts, rng, 2)
    r_aorta = np.array([14, 13, 12, 11, 10, 9]) * rng.uniform(0.85, 1.2)
    p.tube(aorta, r_aorta, T.ARTERY, AORTA)
    if rng.random() < 0.5:  # wall calcifications (older patients)
        for c in aorta[rng.integers(0, len(aorta), 4)]:
            p.blob(c + rng.normal(0, 1, 3) + [-r_aorta[-1] * 0.8, -3, 0], (2.5, 2.5, 4), T.CALCIFICATION, KEEP,
                   only_label=AORTA)
    for side in (-1, 1):  # iliac arteries and veins: unlabelled, as bright as aorta and IVC
        p.tube(body.path([aorta_pts[-1], (side * 40, spine_y(-170) - 30, -175), (side * 70, 0, -260)], rng, 2),
               [8, 6.5, 5.5], T.ARTERY, 0)
        p.tube(body.path([(-18, spine_y(-130) - 22, -135), (side * 38, spine_y(-180) - 18, -185),
                          (side * 65, 10, -265)], rng, 2), [9, 8, 7], T.VEIN, 0)
    # inferior vena cava: iliac confluence -> right of the aorta -> behind the liver -> right atrium
    ivc = body.path([(-20, spine_y(-130) - 26, -130), (-22, spine_y(-40) - 30, -40), (-24, spine_y(40) - 34, 40),
                     (-28, 8, 110), (-25, -5, body.dome_right + 15)], rng, 2)
    p.tube(ivc, np.array([10, 11, 12, 13, 14]) * rng.uniform(0.8, 1.2), T.VEIN, IVC)
    # hepatic veins into the IVC: inside the liver, labelled liver
    for angle in (-70, -10, 40):
        tip = ivc[-2] + 70 * np.array([np.sin(np.deg2rad(angle)), -np.cos(np.deg2rad(angle)) * 0.6, -0.4])
        p.tube([tip, (tip + ivc[-2]) / 2 + rng.normal(0, 4, 3), ivc[-2]], [3, 5, 6], T.VEIN, KEEP, only_label=LIVER)
    # portal venous system: splenic vein behind the pancreas, SMV, portal vein into the liver hilum
    confluence = body.at(-10, 2, 40)
    splenic = body.path([(85, 32, 80), (55, 10, 64), (20, -2, 48)], rng, 2)
    p.tube(np.vstack([splenic, confluence]), 4.5, T.PORTAL, 0)
    p.tube(body.path([(-20, -25, -70), (-15, -5, 0)], rng, 2).tolist() + [confluence], 5.5, T.PORTAL, 0)
    hilum = body.at(-45, -5, 92)
    p.tube([confluence, hilum], 7.5, T.PORTAL, 0)
    for tip in ((-95, -10, 110), (-60, 30, 140), (10, -40, 125)):
        p.tube([hilum, body.at(*tip) + rng.normal(0, 6, 3)], [6, 3], T.PORTAL, KEEP, only_label=LIVER)
    # arteries from the aorta: celiac, SMA, renal arteries; left renal vein crossing in front of the aorta
    celiac_z, sma_z = rng.uniform(55, 75), rng.uniform(30, 48)
    p.tube(body.path([(ax, spine_y(celiac_z) - 40, celiac_z), (ax - 5, -20, celiac_z + 5)], rng, 1), 3.5,
           T.ARTERY, 0)
    p.tube(body.path([(ax - 2, spine_y(sma_z) - 40, sma_z), (ax - 4, -15, sma_z - 20), (0, -25, -80)], rng, 2),
           [4, 4, 3], T.ARTERY, 0)
    renal_z = rng.uniform(0, 20)
    for side in (-1, 1):
        p.tube(body.path([(ax - 3, spine_y(renal_z) - 32, renal_z), (side * 50, 30, renal_z - 5)], rng, 1), 3,
               T.ARTERY, 0)
    p.tube(body.path([(55, 25, renal_z + 5), (10, spine_y(renal_z + 10) - 50, renal_z + 10),
                      (-22, spine_y(renal_z + 10) - 34, renal_z + 10)], rng, 1), 5, T.VEIN, 0)
    p.tube(body.path([(-50, 28, renal_z), (-24, spine_y(renal_z) - 34, renal_z)], rng, 1), 4.5, T.VEIN, 0)
    # esophagus: posterior mediastinum in front of the spine, through the hiatus into the cardia
    esophagus = body.path([(2, spine_y(460) - 24, 460), (4, spine_y(300) - 30, 300), (10, spine_y(190) - 40, 190),
                           (24, 5, 150), (42, 10, 135)], rng, 2)
    r_esophagus = 8.5 * rng.uniform(0.8, 1.2)
    # the template runs the esophagus within ~11 mm of the aorta's axis above the hiatus, and the jitter did the
    # rest: painted over the aorta it took 5 % of its voxels on average and up to 13 %, leaving an aortic crescent
    # around it. The soft esophagus yields to the pressurised aorta instead.
    esophagus, position = clear_of(esophagus, r_esophagus, aorta, r_aorta, ESOPHAGUS_AORTA_GAP_MM)
    p.tube(esophagus, r_esophagus, T.ESOPHAGUS_WALL, ESOPHAGUS)
    if rng.random() < 0.5:  # air in the lumen down to the last bend before the cardia
        p.tube(esophagus[position <= position[-1] - 1], r_esophagus * 0.35, T.AIR, ESOPHAGUS, only_label=ESOPHAGUS)


def clear_of(points: np.ndarray, radius: float, obstacle: np.ndarray, obstacle_radii: np.ndarray, gap_mm: float,
             step_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """The curve through `points` (a tube of `radius`) sampled every ~`step_mm` and moved sideways (in x, y) where
    it comes closer than `gap_mm` to the tube along `obstacle` (radii `obstacle_radii` at its points). Returns the
    samples and each one's position along the control points (0 at the first, 1 at the second, ...)."""
    samples, position = catmull_rom(points, np.arange(len(points), dtype=float), step_mm)
    obstacle_samples, obstacle_sample_radii = catmull_rom(obstacle, obstacle_radii, step_mm)
    for _ in range(4):  # one push can bring a sample closer to another part of the obstacle
        offset = samples[:, None, :] - obstacle_samples[None, :, :]
        distance = np.linalg.norm(offset, axis=2)
        deficit = obstacle_sample_radii[None, :] + radius + gap_mm - distance
        nearest = deficit.argmax(axis=1)
        rows = np.nonzero(deficit[np.arange(len(samples)), nearest] > 0)[0]
        if len(rows) == 0:
            break
        for i in rows:
            j = nearest[i]
            sideways = offset[i, j, :2] + [0.0, -1.0]  # straight through the axis: move to the front
            sideways /= np.linalg.norm(sideways)
            # in-plane move that makes the 3-D distance to this obstacle sample what the gap needs
            dz = offset[i, j, 2]
            needed = np.sqrt(max((obstacle_sample_radii[j] + radius + gap_mm) ** 2 - dz ** 2, 0.0))
            samples[i, :2] = obstacle_samples[j, :2] + sideways * max(needed, float(offset[i, j, :2] @ sideways))
    return samples, position


def paint_patient(p: Painter, body: Body, rng: np.random.Generator) -> None:
    content = int(rng.choice([T.GI_FLUID, T.ORAL_CONTRAST, T.GI_FOOD], p=[0.5, 0.3, 0.2]))
    paint_body(p, body, rng)
    paint_bowel(p, body, rng, content)
    paint_muscles(p, body, rng)
    paint_skeleton(p, body, rng)
    paint_thorax(p, body, rng)
    paint_organs(p, body, rng, content)
