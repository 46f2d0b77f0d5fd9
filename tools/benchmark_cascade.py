"""Benchmark the two-phase cascade against nnU-Net's default 3d_fullres predictor on the CPU.

Each case runs in its own process: the wall time is the whole command (start, imports, model set-up, read,
both phases, write) and the peak memory is that process's VmHWM. Stage times come from the predictor's report.

    python tools/benchmark_cascade.py                         # 512 x 512 x N for N in 55..597 + real CTs;
                                                              # nnU-Net on the smallest size only
    python tools/benchmark_cascade.py --nnunet all            # nnU-Net on every size (hours on 2 cores)
    python tools/benchmark_cascade.py --sizes 200 --nnunet none --no_real
    python tools/benchmark_cascade.py --sizes 218 --no_real --nnunet none --backends torch openvino --warm 3
    python tools/benchmark_cascade.py --sizes 218 --no_real --nnunet none --windows tiles fitted

Runtimes (--backends, default: torch, openvino if installed, openvino-bf16 if the CPU has native bf16; torch is eager
fp32, the baseline): every case runs once per runtime, each in a fresh process (cold: start to written file, the
FLARE protocol); --warm N adds the median of N more runs of the same case in that process (warm per-case latency).
OpenVINO's one-off conversion is done before the timed runs and reported on its own. Agreement: the share of
foreground voxels (either label > 0) where a runtime's labels equal torch's.
A patch table times the organ network alone on one 96^3 patch per runtime: the first pass, then --patch_repeats
rounds in which the runtimes take turns; the speed-up is the median of the per-round ratios.

Windows (--windows, default both): the organ network's 96^3 tiles (the paper's) and windows fitted to the crop (one
window where it fits the range of a model trained for any window: the random organ checkpoint records the range
`nnUNetTrainerFlareOrgansAnyWindow` would, 6 x 96^3 voxels). Every case runs once per runtime and window, runtimes
and windows taking turns; agreement is against the first runtime's first window. `fitted:N` caps each fitted window
at N voxels (nnUNetv2_flare_predict --window_voxels N).

Random weights make the locator's box random, so the benchmark runs the locator (for its time) and then crops a
fixed, realistic box (--box_mm, x y z, default 330 x 240 x 260 mm, centred; clipped to the volume).
Networks: the paper's configurations (FlareLocator 1.37 M, FlareOrganNet 9.37 M) with random weights. nnU-Net side:
PlainConvUNet, 6 stages 32..320, patch 80 x 192 x 160 (z, y, x), at the image's spacing (no resampling),
`nnUNetv2_predict --disable_tta`, one preprocessing and one export process.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
PAPER_SIZES = (55, 124, 218, 316, 457, 597)
SPACING_XYZ = (0.78, 0.78, 2.5)


# ---------------------------------------------------------------------------------------------- inputs
def synthetic_ct(n_slices: int, path: Path, seed: int = 0) -> None:
    """A simple abdominal-looking CT: air, an elliptic body with organ-like blobs and a spine, noise (int16 HU)."""
    import SimpleITK as sitk
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[-1:1:512j, -1:1:512j]
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 <= 1
    liver = ((x + 0.35) / 0.35) ** 2 + ((y + 0.1) / 0.3) ** 2 <= 1
    spine = (x / 0.08) ** 2 + ((y - 0.45) / 0.08) ** 2 <= 1
    volume = np.empty((n_slices, 512, 512), np.int16)
    for z in range(n_slices):
        s = np.full((512, 512), -1000.0, np.float32)
        s[body] = 30
        s[liver & body] = 60 + 20 * np.sin(z / 9)
        s[spine] = 450
        s += rng.normal(0, 15, s.shape).astype(np.float32)
        volume[z] = s.astype(np.int16)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(SPACING_XYZ)
    sitk.WriteImage(image, str(path), useCompression=True)


def real_cases() -> list[Path]:
    candidates = [REAL / "3dircadb" / "3Dircadb1.1_PATIENT_DICOM.nii.gz",
                  REAL / "tcga-ov" / "TCGA-09-2043_CEAxial3.0WITH_CE_z056-159.nii.gz",
                  REAL / "totalsegmentator" / "example_ct_dicom"]
    return [p for p in candidates if p.exists()]


# ---------------------------------------------------------------------------------------------- models
def write_nnunet_fullres(results: Path) -> str:
    """A default-style nnU-Net 3d_fullres model folder (PlainConvUNet 6 stages 32..320) with random weights."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from random_models import CT_INTENSITY_PROPERTIES, plans_configuration

    from nnunetv2_flare.atomic_io import write_json_atomic
    from nnunetv2_flare.labels import dataset_json_labels

    dataset = "Dataset998_BenchFullres"
    folder = results / dataset / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_all").mkdir(parents=True, exist_ok=True)
    arch = {"n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[1, 3, 3]] + [[3, 3, 3]] * 5,
            "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
            "n_conv_per_stage": [2] * 6, "n_conv_per_stage_decoder": [2] * 5, "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    config = plans_configuration("dynamic_network_architectures.architectures.unet.PlainConvUNet", arch,
                            [80, 192, 160], list(SPACING_XYZ[::-1]))
    config["architecture"]["_kw_requires_import"] = ["conv_op", "norm_op", "dropout_op", "nonlin"]
    config["data_identifier"] = "nnUNetPlans_3d_fullres"
    plans = {"dataset_name": dataset, "plans_name": "nnUNetPlans",
             "original_median_spacing_after_transp": list(SPACING_XYZ[::-1]),
             "original_median_shape_after_transp": [200, 512, 512], "image_reader_writer": "SimpleITKIO",
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
             "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": {"0": dict(CT_INTENSITY_PROPERTIES)},
             "configurations": {"3d_fullres": config}}
    write_json_atomic(plans, folder / "plans.json")
    write_json_atomic({"channel_names": {"0": "CT"}, "labels": dataset_json_labels(), "numTraining": 0,
                       "file_ending": ".nii.gz"}, folder / "dataset.json")
    network = get_network_from_plans(config["architecture"]["network_class_name"], arch,
                                     config["architecture"]["_kw_requires_import"], 1, 14, deep_supervision=False)
    torch.save({"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "3d_fullres"}, "inference_allowed_mirroring_axes": (0, 1, 2)},
               folder / "fold_all" / "checkpoint_final.pth")
    return dataset


# ---------------------------------------------------------------------------------------------- child: one case
class FixedBoxLocator:
    """Runs the real locator (for its cost), then answers with a centred box of fixed physical size."""

    def __init__(self, model, box_mm_xyz, margin_mm: float) -> None:
        self.model, self.box_mm, self.margin_mm = model, box_mm_xyz, margin_mm

    def __call__(self, x, grid):
        self.model(x, grid)
        out = np.zeros(x.shape[2:], np.uint8)
        sl = []
        for n, sp, mm in zip(grid.size[::-1], grid.spacing[::-1], self.box_mm[::-1]):
            k = min(n, max(1, round((mm - 2 * self.margin_mm) / sp)))  # the predictor adds the margin back
            sl.append(slice((n - k) // 2, (n - k) // 2 + k))
        out[tuple(sl)] = 1
        return out


def window_choice(value: str) -> str:
    """argparse type of --windows: 'tiles', 'fitted', or 'fitted:N' (fitted windows of at most N voxels, N read as
    nnUNetv2_flare_predict --window_voxels reads it)."""
    from nnunetv2_flare.inference.cli.checks import voxel_count
    mode, _, voxels = value.partition(":")
    try:
        if mode not in ("tiles", "fitted") or (voxels and mode != "fitted"):
            raise argparse.ArgumentTypeError(mode)
        return f"fitted:{voxel_count(voxels)}" if voxels else mode
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"invalid window {value!r}: tiles, fitted or fitted:N (N voxels, e.g. "
                                         f"1e6)") from None


def window_settings(window: str) -> dict:
    mode, _, voxels = window.partition(":")
    return {"window": mode, "window_voxels": int(voxels) if voxels else None}


def run_case(args) -> None:
    t0 = time.perf_counter()
    from nnunetv2_flare.atomic_io import write_image_atomic
    from nnunetv2_flare.inference import CascadeSettings, FlareCascadePredictor, ModelSettings
    backend, precision = runtime(args.backend)
    predictor = FlareCascadePredictor.from_folders(
        args.m1, args.m2, ModelSettings(threads=args.threads, backend=backend, precision=precision),
        CascadeSettings(progress=False, **window_settings(args.window)))
    predictor.locator.model = FixedBoxLocator(predictor.locator.model, args.box_mm,
                                              predictor.cascade_settings.margin_mm)
    setup = time.perf_counter() - t0
    result = predictor.run(args.input)
    t = time.perf_counter()
    write_image_atomic(result.labels, args.output)
    result.timings["write"] = time.perf_counter() - t
    report = result.to_report()
    report["setup_s"] = round(setup, 3)
    report["cold_s"] = round(time.time() - args.launched, 2)  # process launch to the first written file
    report["peak_gb"] = peak_rss_gb()
    warm = []
    for _ in range(args.warm):
        t = time.perf_counter()
        again = predictor.run(args.input)
        write_image_atomic(again.labels, args.output)
        warm.append(time.perf_counter() - t)
    if warm:
        report["warm_s"] = round(sorted(warm)[len(warm) // 2], 2)
    print("RESULT " + json.dumps(report))


def peak_rss_gb() -> float | None:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child
    forked from a big parent (this benchmark holds networks) would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024 ** 2, 2)
    except OSError:
        pass
    return None


def runtime(setting: str) -> tuple[str, str]:
    """'torch', 'openvino' or 'openvino-bf16' -> (backend, precision)."""
    backend, _, precision = setting.partition("-")
    return backend, precision or "fp32"


def take_turns(runners: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each call when the runners take turns, `repeats` rounds, the order rotating every round, so that
    a noisy shared host slows them alike."""
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t)
    return times


def median_ratio(base: list[float], other: list[float]) -> float:
    """The median over rounds of base's time over other's: the speed-up of `other`, round by round."""
    return float(np.median(np.array(base) / np.array(other)))


def logits_ir(model_folder: Path) -> Path:
    """The fp32 OpenVINO model (inference graph, logits out) of the folder's fold_all checkpoint, converted once and
    kept next to it. The cascade's cached model ends in the argmax."""
    import openvino as ov

    from nnunetv2_flare.inference.models.backends.openvino import convert
    from nnunetv2_flare.inference.models.loading import load_phase
    path = model_folder / "fold_all" / "study_logits.xml"
    if not path.is_file():
        phase = load_phase(model_folder, backend="torch")
        assert len(set(phase.patch_size)) == 1, "a cubic patch: the same in array and network order"
        ov.save_model(convert(phase.model.network, (1, 1, *phase.patch_size), labels=False), str(path),
                      compress_to_fp16=False)
    return path


def patch_latency(m2: Path, settings: list[str], threads: int, repeats: int = 7) -> list[dict]:
    """The organ network on one patch, per runtime, in this process, two ways: `logits` (the network alone: eager
    PyTorch's training network, OpenVINO's inference graph) and `labels` (a tile's whole cost in the cascade, the
    phase model: PyTorch's network + NumPy argmax, OpenVINO's graph ending in the argmax). After one first pass each
    (`labels`' follows `logits`' in the same process: only the latter is a process's first), all take turns
    (`repeats` rounds, the order rotating every round) so that a noisy shared host slows them alike; the speed-up is
    the median over rounds of torch's time over the runtime's time in the same round, with the same output."""
    import torch

    from nnunetv2_flare.inference.core.cascade import set_threads
    from nnunetv2_flare.inference.models.loading import load_phase
    set_threads(threads)
    runners: dict[str, Callable[[], object]] = {}  # keyed "<setting> <output>"
    first: dict[str, float] = {}
    for setting in settings:
        backend, precision = runtime(setting)
        phase = load_phase(m2, backend=backend, threads=threads, precision=precision)
        x = np.random.default_rng(0).standard_normal((1, 1, *phase.patch_size), dtype=np.float32)
        if backend == "torch":
            network, xt = phase.model.network, torch.from_numpy(x)

            def logits(network=network, xt=xt):
                with torch.inference_mode():
                    return network(xt)
        else:
            from nnunetv2_flare.inference.models.backends.openvino import compile_config, compile_on_cpu
            request = compile_on_cpu(str(logits_ir(m2)), compile_config(precision, threads)).create_infer_request()
            def logits(request=request, x=x):
                return request.infer({0: x})
        runners[f"{setting} logits"] = logits
        runners[f"{setting} labels"] = (lambda m=phase.model, x=x: m(x, None))
        for key in (f"{setting} logits", f"{setting} labels"):
            t = time.perf_counter()
            runners[key]()
            first[key] = time.perf_counter() - t
    times = take_turns(runners, repeats)
    eager = times[f"{settings[0]} logits"]  # the eager network alone: the strictest baseline
    return [{"backend": s, "output": out, "first_s": round(first[f"{s} {out}"], 3),
             "median_s": round(float(np.median(times[f"{s} {out}"])), 3),
             "speedup_vs_torch": round(median_ratio(times[f"{settings[0]} {out}"], times[f"{s} {out}"]), 2),
             "speedup_vs_torch_network": round(median_ratio(eager, times[f"{s} {out}"]), 2)}
            for out in ("logits", "labels") for s in settings]


def label_agreement(a: Path, b: Path) -> float:
    import SimpleITK as sitk

    from nnunetv2_flare.evaluation.metrics import foreground_agreement
    same, total = foreground_agreement(*(sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in (a, b)))
    return same / total if total else 1.0


# ---------------------------------------------------------------------------------------------- parent
def timed(cmd: list[str], env: dict | None = None, timeout: float | None = None
          ) -> tuple[float, float, float, str]:
    """Wall seconds, peak RSS (GiB), CPU seconds (user + system: a busy shared machine inflates wall time, CPU time
    much less) of the command's process (measure.py), and its output."""
    from measure import run_measured_output

    code, wall, cpu, peak_bytes, output = run_measured_output(cmd, env, timeout)
    if code != 0:
        raise RuntimeError(f"{cmd[:3]}... failed ({code}):\n{''.join(output.splitlines(keepends=True)[-30:])}")
    return wall, peak_bytes / 1024 ** 3, cpu, output


def nnunet_predict(input_file: Path, work: Path, dataset: str, results: Path, threads: int
                   ) -> tuple[float, float, float]:
    """nnUNetv2_predict --disable_tta on one file: wall seconds, peak memory over all its processes (GB), CPU
    seconds."""
    inp, out = work / "nnunet_in", work / "nnunet_out"
    for d in (inp, out):
        d.mkdir(parents=True, exist_ok=True)
        for p in d.iterdir():
            p.unlink()
    os.symlink(input_file.resolve(), inp / "case_0000.nii.gz")
    env = {**os.environ, "nnUNet_results": str(results), "nnUNet_raw": str(work), "nnUNet_preprocessed": str(work),
           "OMP_NUM_THREADS": str(threads), "nnUNet_def_n_proc": str(threads)}
    code = ("import resource, subprocess, sys, time; t = time.perf_counter();"
            "r = subprocess.run(sys.argv[1:]).returncode;"
            "u = resource.getrusage(resource.RUSAGE_CHILDREN);"
            "print('WALL', time.perf_counter() - t, 'RSS', u.ru_maxrss, 'CPU', u.ru_utime + u.ru_stime);"
            "sys.exit(r)")
    cmd = [sys.executable, "-c", code, "nnUNetv2_predict", "-i", str(inp), "-o", str(out), "-d", dataset,
           "-c", "3d_fullres", "-f", "all", "--disable_tta", "-device", "cpu", "-npp", "1", "-nps", "1"]
    _, _, _, text = timed(cmd, env)
    line = [line for line in text.splitlines() if line.startswith("WALL")][-1].split()
    return float(line[1]), float(line[3]) / 1024 ** 2, float(line[5])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=list(PAPER_SIZES), help="slice counts of 512^2 volumes")
    p.add_argument("--no_real", action="store_true", help="skip the real CTs in ../shared/data/real")
    p.add_argument("--nnunet", choices=["smallest", "all", "none"], default="smallest")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--box_mm", type=float, nargs=3, default=[330.0, 240.0, 260.0], help="crop box x y z (mm)")
    p.add_argument("--work", type=Path, default=Path("/tmp/flare_cascade_benchmark"))
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    p.add_argument("--backends", nargs="+", choices=["torch", "openvino", "openvino-bf16"], default=None,
                   help="organ-network runtimes to time (default: torch, openvino when installed, openvino-bf16 "
                        "when the CPU has native bf16); torch first: the others are compared with it")
    p.add_argument("--windows", nargs="+", type=window_choice, default=["tiles", "fitted"],
                   help="the organ network's windows to time: tiles of the 96^3 patch, windows fitted to the crop, "
                        "fitted:N (fitted windows of at most N voxels, --window_voxels)")
    p.add_argument("--patch_repeats", type=int, default=7, help="rounds of the patch latency table")
    p.add_argument("--warm", type=int, default=0, help="also time N more runs per case in the same process")
    p.add_argument("--_case", nargs=4, metavar=("M1", "M2", "INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    p.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    p.add_argument("--window", default="tiles", help=argparse.SUPPRESS)
    p.add_argument("--launched", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._case:
        args.m1, args.m2, args.input, args.output = args._case
        run_case(args)
        return

    import torch
    from random_models import write_random_cascade

    from nnunetv2_flare.inference.models.backends import native_bf16, openvino_available
    from nnunetv2_flare.window_shapes import WindowRange
    backends = args.backends or (["torch"] + (["openvino"] if openvino_available() else [])
                                 + (["openvino-bf16"] if openvino_available() and native_bf16() else []))
    if "openvino-bf16" in backends and not native_bf16():
        print("openvino-bf16 left out: this CPU has no native bf16 (AVX512_BF16 / AMX)", flush=True)
        backends.remove("openvino-bf16")
    work = args.work
    results = work / "results"
    m1, m2 = write_random_cascade(results, "Dataset220_FLAREBench", tiny=False,
                                  organ_window_range=WindowRange.around((96, 96, 96), 16, 6))
    if any(b.startswith("openvino") for b in backends):
        from nnunetv2_flare.inference.models.loading import load_phase
        for name, folder in (("locator", m1), ("organ network", m2)):
            t = time.perf_counter()
            load_phase(folder, backend="openvino")  # the one-off conversion (cached next to the checkpoint)
            print(f"OpenVINO conversion (or cache hit) of the {name}: {time.perf_counter() - t:.1f} s", flush=True)
    nnunet_dataset = write_nnunet_fullres(results) if args.nnunet != "none" else None
    inputs: list[tuple[str, Path]] = []
    for n in args.sizes:
        path = work / "inputs" / f"synthetic_512x512x{n}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            synthetic_ct(n, path)
        inputs.append((f"512x512x{n}", path))
    if not args.no_real:
        inputs += [(p.name.split(".")[0][:28], p) for p in real_cases()]
    smallest = min(args.sizes) if args.sizes else None

    patches = patch_latency(m2, backends, args.threads, args.patch_repeats)
    print("\n| organ network, one 96^3 patch | output | first pass s | median s | speed-up vs torch, same output | "
          "vs torch's network alone (logits) |\n|---|---|---|---|---|---|")
    for r in patches:
        print(f"| {r['backend']} | {r['output']} | {r['first_s']} | {r['median_s']} | {r['speedup_vs_torch']}x | "
              f"{r['speedup_vs_torch_network']}x |")
    print(flush=True)

    rows = []
    nnunet_by_case: dict[str, tuple[float, float, float]] = {}
    runs = [(b, w) for b in backends for w in args.windows]
    for (label, path), (backend, window) in [(i, r) for i in inputs for r in runs]:
        out = work / "outputs" / f"{backend}_{window}" / f"{label}.nii.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        _, rss, cpu, text = timed([sys.executable, __file__, "--threads", str(args.threads), "--box_mm",
                                 *map(str, args.box_mm), "--backend", backend, "--window", window,
                                 "--warm", str(args.warm), "--launched", repr(time.time()),
                                 "--_case", str(m1), str(m2), str(path), str(out)])
        report = json.loads([line for line in text.splitlines() if line.startswith("RESULT ")][-1][7:])
        # with --warm the process also ran the warm repeats: its CPU time is then not one case's
        case_cpu = cpu if args.warm == 0 else None
        row = {"case": label, "backend": backend, "window": window, "wall_s": report["cold_s"],
               "cpu_s": round(case_cpu, 1) if case_cpu else "-", **report}
        row["peak_gb"] = report["peak_gb"] or round(rss, 2)
        if (backend, window) != runs[0]:
            first = work / "outputs" / "_".join(runs[0]) / f"{label}.nii.gz"
            row["agreement"] = round(label_agreement(first, out), 5)
        run_nnunet = nnunet_dataset and (backend, window) == runs[0] and (
            args.nnunet == "all" or label == f"512x512x{smallest}")
        if run_nnunet:
            print(f"running nnUNetv2_predict on {label} (slow) ...", flush=True)
            nnunet_by_case[label] = nnunet_predict(path, work, nnunet_dataset, results, args.threads)
        if label in nnunet_by_case:  # every backend's row is compared with the same nnU-Net run
            nn_wall, nn_rss, nn_cpu = nnunet_by_case[label]
            row.update(nnunet_wall_s=round(nn_wall, 1), nnunet_peak_gb=round(nn_rss, 2), nnunet_cpu_s=round(nn_cpu, 1),
                       speedup=round(nn_wall / row["wall_s"], 1))
            if case_cpu:
                row["cpu_speedup"] = round(nn_cpu / case_cpu, 1)
        rows.append(row)
        print_row(row, header=len(rows) == 1)
    if args.json:
        args.json.write_text(json.dumps({"patch_latency": patches, "cases": rows}, indent=2))
    print(f"\nmachine: {os.cpu_count()} cores ({cpu_name()}; {cpu_flags()}), torch {torch.__version__}, "
          f"OpenVINO {openvino_version()}, threads {args.threads}")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def openvino_version() -> str:
    from nnunetv2_flare.inference.models.backends import openvino_available
    if not openvino_available():
        return "not installed"
    import openvino
    return openvino.get_version().split("-")[0]


def cpu_flags() -> str:
    """The instruction-set flags that decide the kernels: vector width, int8 dot products, native bf16 / fp16."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
              "amx_fp16", "avx512_fp16")
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "flags unknown"
    have = set(flags.split(":", 1)[1].split())
    return " ".join(f for f in wanted if f in have) or "none of " + " ".join(wanted)


def windows_text(windows: list[dict]) -> str:
    """'12 x 96x96x96' per segmented region (x y z)."""
    return ", ".join(f"{w['count']} x {'x'.join(map(str, w['shape_xyz']))}" for w in windows)


def print_row(row: dict, header: bool) -> None:
    t = row["timings_s"]
    cols = ["case", "backend", "window", "size xyz", "crop xyz (mm)", "work xyz", "windows", "whole s", "setup", "read", "locate",
            "resample", "sliding", "post", "restore", "write", "peak GB", "warm s", "agreement", "CPU s",
            "nnU-Net s", "nnU-Net GB", "nnU-Net CPU s", "speed-up (wall)", "speed-up (CPU)"]
    if header:
        print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    locate = t.get("locate_resize", 0) + t.get("locate_network", 0) + t.get("locate_postprocess", 0)
    crop = row["crop_box"]
    vals = [row["case"], row["backend"], row["window"], "x".join(map(str, row["image_size_xyz"])),
            "x".join(map(str, crop["size_xyz"])) + " (" + "x".join(f"{v:.0f}" for v in crop["size_mm_xyz"]) + ")",
            "x".join(map(str, row["working_shape_xyz"])), windows_text(row["organ_windows"]), row["wall_s"],
            row["setup_s"],
            t.get("read", 0), round(locate, 2), t.get("segment_resample", 0), t.get("segment_network", 0),
            t.get("postprocess", 0), t.get("restore", 0), t.get("write", 0), row["peak_gb"],
            row.get("warm_s", "-"), f"{100 * row['agreement']:.2f} %" if "agreement" in row else "-",
            row["cpu_s"], row.get("nnunet_wall_s", "-"), row.get("nnunet_peak_gb", "-"), row.get("nnunet_cpu_s", "-"),
            f"{row['speedup']}x" if "speedup" in row else "-",
            f"{row['cpu_speedup']}x" if "cpu_speedup" in row else "-"]
    print("| " + " | ".join(str(v) for v in vals) + " |", flush=True)


if __name__ == "__main__":
    main()
