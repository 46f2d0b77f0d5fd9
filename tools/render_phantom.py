"""Render a phantom (or any CT + label map) as a PNG: axial slices and a coronal slice, labels overlaid.

    python tools/render_phantom.py --seed 3 -o docs/phantom.png                  # generate and render
    python tools/render_phantom.py -i case_0000.nii.gz -l case.nii.gz -o x.png   # render files

Slices are shown the radiological way (patient's right on the image's left, anterior up, head up), whatever the
header's direction: the arrays are reoriented from the direction cosines first.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np
import SimpleITK as sitk

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from nnunetv2_flare.labels import FLARE_ORGANS  # noqa: E402

COLOURS = ["#00000000", "#a0522d", "#ffd700", "#8a2be2", "#ff69b4", "#ff0000", "#1e90ff", "#00ff7f", "#7fff00",
           "#32cd32", "#ff8c00", "#00ced1", "#ffb6c1", "#ffa500"]


def to_lps_arrays(image: sitk.Image, label: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, y, x) arrays with x to the patient's left, y to the back, z to the head; and spacing (z, y, x)."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if not np.allclose(np.abs(direction), np.eye(3), atol=1e-3):
        raise ValueError("only axis-aligned directions are supported for rendering")
    flips = tuple(slice(None, None, -1) if direction[i, i] < 0 else slice(None) for i in (2, 1, 0))
    return (sitk.GetArrayFromImage(image)[flips], sitk.GetArrayFromImage(label)[flips],
            np.asarray(image.GetSpacing()[::-1]))


def render(image: sitk.Image, label: sitk.Image, output: Path, title: str = "") -> None:
    ct, seg, spacing = to_lps_arrays(image, label)
    shown = np.clip((ct.astype(np.float32) + 160) / 400, 0, 1)  # abdominal window W400 / L40
    z_of = {organ: int(np.median(np.nonzero((seg == organ).any(axis=(1, 2)))[0]))
            for organ in (1, 4, 13, 7) if (seg == organ).any()}
    axial = [z_of.get(7, ct.shape[0] * 2 // 3), z_of.get(4, ct.shape[0] // 2), z_of.get(13, ct.shape[0] // 3)]
    kidneys = np.nonzero(np.isin(seg, (2, 13)).any(axis=(0, 2)))[0]
    coronal_y = int(kidneys.mean()) if kidneys.size else ct.shape[1] // 2
    cmap = ListedColormap(COLOURS)
    fig, axes = plt.subplots(2, 4, figsize=(20, 10.5), facecolor="black")
    panels = [(shown[z], seg[z], spacing[1] / spacing[2], f"axial {z}") for z in axial]
    panels.append((shown[::-1, coronal_y], seg[::-1, coronal_y], spacing[0] / spacing[2], f"coronal {coronal_y}"))
    for column, (gray, lab, aspect, name) in enumerate(panels):
        for row, overlay in enumerate((False, True)):
            ax = axes[row, column]
            ax.imshow(gray, cmap="gray", aspect=aspect, interpolation="nearest")
            if overlay:
                ax.imshow(np.ma.masked_equal(lab, 0), cmap=cmap, vmin=0, vmax=13, alpha=0.45, aspect=aspect,
                          interpolation="nearest")
            ax.set_title(name, color="white")
            ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS[i]) for i in FLARE_ORGANS]
    fig.legend(handles, list(FLARE_ORGANS.values()), loc="lower center", ncol=7, facecolor="black",
               labelcolor="white", frameon=False)
    fig.suptitle(title, color="white")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=60, facecolor="black")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=3, help="phantom seed (when no -i is given)")
    parser.add_argument("--shape", default="full", help="phantom size: full, half, small, tiny or a factor")
    parser.add_argument("--fov", default="abdomen", help="phantom field of view (see nnunetv2_flare.phantoms.scan)")
    parser.add_argument("-i", default=None, help="CT image file to render instead of a new phantom")
    parser.add_argument("-l", default=None, help="label map file (with -i)")
    parser.add_argument("-o", default="docs/phantom.png", help="output PNG")
    args = parser.parse_args()
    if args.i:
        image, label = sitk.ReadImage(args.i), sitk.ReadImage(args.l)
        title = Path(args.i).name
    else:
        from nnunetv2_flare.phantoms.generator import make_phantom_arrays
        shape = args.shape if args.shape in ("full", "half", "small", "tiny") else float(args.shape)
        phantom = make_phantom_arrays(args.seed, shape, args.fov)
        image, label = phantom.to_sitk()
        info = phantom.info
        title = (f"phantom seed {args.seed}: {info['fov']}, {info['phase']}, {image.GetSize()} voxels, spacing "
                 f"{tuple(round(s, 2) for s in image.GetSpacing())} mm, header flips (x, y, z) {info['flips_xyz']}")
    render(image, label, Path(args.o), title)
    print(f"wrote {args.o}")


if __name__ == "__main__":
    main()
