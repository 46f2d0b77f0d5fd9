"""Held-out DSC against training iterations and CPU seconds: the demo's organ network next to nnU-Net's
PlainConvUNet of similar size, on the same preprocessed phantoms, the same sampling, loss and optimiser.

    nnUNetv2_flare_demo -o flare_demo            # (or any run that preprocessed flare_organs_demo)
    python tools/learning_curve.py \
        --data flare_demo/nnUNet_preprocessed/Dataset900_FlarePhantoms/FlarePlans_flare_organs_demo \
        --iterations 1500 --eval_every 250 -o docs/learning_curve

The loop is the demo trainer's recipe without nnU-Net's trainer around it (so that both networks are timed the same
way): patches of the demo's size from the preprocessed cases held in memory, 5 of 6 centred on a random organ (of a
random class: nnU-Net's oversampling), nnU-Net's own Dice + cross-entropy loss and deep-supervision weights, AdamW with
a linear warm-up and cosine annealing, no augmentation. The last `--test` cases are held out. DSC is FLARE's (an organ
absent from both scores 1) on the preprocessed grid of the held-out cases (cropped to their labelled foreground),
averaged over the 13 organs; the demo itself scores the whole cascade on the original grid. CPU seconds are the
process's CPU time spent in training steps (evaluation excluded). Writes OUT.json, OUT.md (a table) and OUT.png.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nnunetv2_flare.evaluation.metrics import dice
from nnunetv2_flare.inference.core.sliding_window import sliding_window_labels
from nnunetv2_flare.inference.models.backends.torch import NetworkModel
from nnunetv2_flare.labels import FLARE_ORGANS, NUM_CLASSES
from nnunetv2_flare.networks.building_blocks.helpers import init_weights
from nnunetv2_flare.training.demo_trainers import DEMO_ORGAN_LR
from nnunetv2_flare.training.lr_schedulers import warmup_cosine_lr


def load_cases(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    import blosc2
    cases = []
    for seg_file in sorted(folder.glob("*_seg.b2nd")):
        seg = np.asarray(blosc2.open(str(seg_file))[:])[0].astype(np.int64)
        image = np.asarray(blosc2.open(str(seg_file).replace("_seg.b2nd", ".b2nd"))[:])[0].astype(np.float32)
        cases.append((image, np.maximum(seg, 0)))
    if not cases:
        raise SystemExit(f"no preprocessed cases (*_seg.b2nd) in {folder}")
    return cases


def build_network(name: str) -> torch.nn.Module:
    if name == "organ":  # the demo's flare_organs_demo network: flare_organs_narrow without stochastic depth
        from nnunetv2_flare.networks import FlareOrganNet
        network = FlareOrganNet(1, NUM_CLASSES, deep_supervision=True, features_per_stage=(24, 48, 96, 192),
                                head_dim=24, drop_path_rate=0.0)
        network.apply(init_weights)
        return network
    if name == "plain":  # nnU-Net's default network, 4 stages of 16-128 channels: 1.40 M parameters against 1.57 M
        from dynamic_network_architectures.architectures.unet import PlainConvUNet
        from dynamic_network_architectures.initialization.weight_init import InitWeights_He
        network = PlainConvUNet(1, 4, (16, 32, 64, 128), torch.nn.Conv3d, 3, (1, 2, 2, 2), 2, NUM_CLASSES, 2, False,
                                torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None,
                                torch.nn.LeakyReLU, {"inplace": True}, deep_supervision=True)
        network.apply(InitWeights_He(1e-2))
        return network
    raise ValueError(name)


class PatchSampler:
    def __init__(self, cases: list[tuple[np.ndarray, np.ndarray]], patch: tuple[int, int, int],
                 foreground_fraction: float, rng: np.random.Generator) -> None:
        self.cases, self.patch, self.fraction, self.rng = cases, np.asarray(patch), foreground_fraction, rng
        self.organ_voxels = [[np.argwhere(seg == c) for c in np.unique(seg) if c > 0] for _, seg in cases]

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        i = self.rng.integers(len(self.cases))
        image, seg = self.cases[i]
        shape, patch = np.asarray(image.shape), self.patch
        if self.rng.random() < self.fraction and self.organ_voxels[i]:
            voxels = self.organ_voxels[i][self.rng.integers(len(self.organ_voxels[i]))]
            low = voxels[self.rng.integers(len(voxels))] - patch // 2
        else:
            low = np.array([self.rng.integers(min(0, n - p), max(0, n - p) + 1) for n, p in zip(shape, patch)])
        low = np.clip(low, np.minimum(0, shape - patch), np.maximum(0, shape - patch))
        out_image, out_seg = np.full(patch, image.min(), np.float32), np.zeros(patch, np.int64)
        src = tuple(slice(max(lo, 0), min(lo + p, n)) for lo, p, n in zip(low, patch, shape))
        dst = tuple(slice(s.start - lo, s.stop - lo) for s, lo in zip(src, low))
        out_image[dst], out_seg[dst] = image[src], seg[src]
        return out_image, out_seg


def nnunet_loss(num_outputs: int) -> torch.nn.Module:
    """nnU-Net's own training loss: Dice + cross-entropy 1:1 (soft Dice over the foreground classes per sample) under
    its deep-supervision weights (halving per level, the coarsest output left out)."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    weights = np.array([1 / 2 ** i for i in range(num_outputs)])
    weights[-1] = 0
    loss = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                          weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    return DeepSupervisionWrapper(loss, weights / weights.sum())


def scaled_targets(target: torch.Tensor, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The label patch at each output's resolution (nearest neighbour), shaped (b, 1, ...) as nnU-Net's loss takes
    it."""
    return [F.interpolate(target[:, None].float(), size=o.shape[2:], mode="nearest") for o in outputs]


@torch.no_grad()
def held_out_dsc(network: torch.nn.Module, cases: list[tuple[np.ndarray, np.ndarray]], patch: tuple[int, ...]
                 ) -> np.ndarray:
    """Per-organ DSC averaged over the cases: the cascade's sliding window (sliding_window.py) with tiles overlapping
    by at least half a patch, each voxel labelled by the tile whose centre is nearest."""
    network.decoder.deep_supervision = False
    model = NetworkModel(network)  # evaluation mode
    per_case = []
    for image, seg in cases:
        pad = [(0, max(0, p - n)) for n, p in zip(image.shape, patch)]
        volume = np.pad(image, pad, constant_values=float(image.min())).astype(np.float32)
        labels = sliding_window_labels(volume, patch, model, lambda start: None, min_overlap=0.5,
                                       progress=False)[tuple(slice(0, n) for n in image.shape)]
        per_case.append([dice(seg == c, labels == c) for c in FLARE_ORGANS])
    network.decoder.deep_supervision = True
    network.train()
    return np.mean(per_case, axis=0)


def learning_curve(name: str, train: list, test: list, args: argparse.Namespace) -> list[dict]:
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    network = build_network(name)
    sampler = PatchSampler(train, tuple(args.patch), args.foreground, rng)
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-5)
    loss_function = None
    points, cpu_seconds, wall_seconds = [], 0.0, 0.0
    warmup = int(args.warmup * args.iterations)
    for iteration in range(1, args.iterations + 1):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine_lr(args.lr, iteration - 1, args.iterations, warmup)
        batch = [sampler.sample() for _ in range(args.batch_size)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))[:, None]
        y = torch.from_numpy(np.stack([b[1] for b in batch]))
        outputs = network(x)
        loss_function = loss_function or nnunet_loss(len(outputs))
        loss = loss_function(outputs, scaled_targets(y, outputs))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
        optimizer.step()
        cpu_seconds += time.process_time() - cpu_start
        wall_seconds += time.perf_counter() - wall_start
        if iteration % args.eval_every == 0 or iteration == args.iterations:
            organs = held_out_dsc(network, test, tuple(args.patch))
            points.append({"network": name, "iteration": iteration, "cpu_seconds": round(cpu_seconds, 1),
                           "wall_seconds": round(wall_seconds, 1), "loss": loss.item(),
                           "mean_DSC": float(organs.mean()),
                           "DSC": {FLARE_ORGANS[c]: float(v) for c, v in zip(FLARE_ORGANS, organs)}})
            print(f"{name:>6} it {iteration:>5}  cpu {cpu_seconds:>7.0f} s  loss {loss.item():.3f}  "
                  f"held-out mean DSC {organs.mean():.3f}", flush=True)
    return points


def write_outputs(points: list[dict], args: argparse.Namespace, output: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output.parent.mkdir(parents=True, exist_ok=True)
    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
               f"torch {torch.__version__}")
    settings = vars(args) | {"data": str(args.data), "o": str(args.o)}
    output.with_suffix(".json").write_text(json.dumps({"settings": settings, "machine": machine, "points": points},
                                                      indent=1))
    lines = ["| network | iterations | CPU s | wall s | held-out mean DSC |", "|---|---|---|---|---|"]
    lines += [f"| {p['network']} | {p['iteration']} | {p['cpu_seconds']:.0f} | {p['wall_seconds']:.0f} | "
              f"{p['mean_DSC']:.3f} |" for p in points]
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in dict.fromkeys(p["network"] for p in points):
        mine = [p for p in points if p["network"] == name]
        label = {"organ": "organ network (demo width)", "plain": "nnU-Net PlainConvUNet 16-128"}.get(name, name)
        axes[0].plot([p["iteration"] for p in mine], [p["mean_DSC"] for p in mine], "o-", label=label)
        axes[1].plot([p["cpu_seconds"] for p in mine], [p["mean_DSC"] for p in mine], "o-", label=label)
    axes[0].set_xlabel("iterations (batch %d)" % args.batch_size)
    axes[1].set_xlabel("CPU seconds in training steps")
    for ax in axes:
        ax.set_ylabel("held-out mean DSC (13 organs)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"demo phantoms, {len(args.test_cases)} held-out cases; {machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(output.with_suffix(".png"), dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--data", type=Path, required=True, help="preprocessed flare_organs_demo folder")
    parser.add_argument("--networks", nargs="+", default=["organ", "plain"], choices=["organ", "plain"])
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--eval_every", type=int, default=250)
    parser.add_argument("--test", type=int, default=6, help="cases held out (the last ones of the folder)")
    parser.add_argument("--patch", type=int, nargs=3, default=(48, 48, 48))
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=DEMO_ORGAN_LR, help="the demo organ trainer's rate")
    parser.add_argument("--warmup", type=float, default=0.07, help="warm-up as a fraction of the iterations")
    parser.add_argument("--foreground", type=float, default=5 / 6,
                        help="share of patches centred on an organ (the organ trainer's 5/6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-o", type=Path, default=Path("docs/learning_curve"), help="output path without suffix")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = load_cases(args.data)
    if len(cases) <= args.test:
        raise SystemExit(f"{len(cases)} cases: too few to hold out {args.test}")
    train, test = cases[:-args.test], cases[-args.test:]
    args.test_cases = list(range(len(cases) - args.test, len(cases)))
    points = []
    for name in args.networks:
        points += learning_curve(name, train, test, args)
    write_outputs(points, args, args.o)
    print(open(args.o.with_suffix(".md")).read())
    print(f"wrote {args.o.with_suffix('.png')}, .md, .json")


if __name__ == "__main__":
    main()
