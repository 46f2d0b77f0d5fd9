"""Runtimes measured for the organ network and left out: INT8 (OpenVINO + NNCF), ONNX Runtime, torch.compile.

    pip install nncf onnx onnxruntime      # not dependencies of nnunetv2-flare
    python tools/runtime_study.py --demo flare_demo      # all three; --only int8 | onnxruntime | compile

ONNX Runtime and torch.compile: the paper-size FlareOrganNet with random weights, one 96^3 patch, against eager
PyTorch (the baseline) and OpenVINO in the same process, the runtimes taking turns (median of --repeats rounds).
ONNX Runtime runs the same channels-first inference graph as OpenVINO; torch.compile the training network.

INT8: post-training quantization with NNCF (calibration on 96^3 / the plans' patches cut from nnU-Net's preprocessed
training cases, half of them centred on a foreground voxel as nnU-Net samples them). Depthwise and grouped
convolutions, the transposed convolution and attention stay fp32: quantized, they fall to slow int8 kernels on AVX2.
Speed: the paper-size FlareOrganNet with random weights, fp32 and INT8 taking turns (median of --repeats rounds).
Accuracy: the demo's trained organ network, labels (argmax) of held-out cases' patches, share of foreground voxels
equal to fp32's, for several quantized scopes.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np
from benchmark_cascade import logits_ir, median_ratio, take_turns  # tools/ is on the path when this script runs

KEEP_FP32 = ["GroupConvolution", "ConvolutionBackpropData", "ScaledDotProductAttention", "MatMul"]
SCOPES = {  # name -> node-name patterns also kept fp32
    "all dense convolutions": [],
    "encoder only": [".*decoder.*", ".*stem.*"],
    "encoder stages 2-4 only": [".*decoder.*", ".*stem.*", r".*stages\.0\..*"],
}


def patches(folder: Path, identifiers: list[str], patch: list[int], n: int, seed: int) -> list[np.ndarray]:
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    dataset = infer_dataset_class(str(folder))(str(folder), identifiers)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        data, _, _, properties = dataset.load_case(identifiers[i % len(identifiers)])
        image = np.pad(np.asarray(data[0]), [(0, max(0, p - s)) for p, s in zip(patch, data.shape[1:])])
        foreground = [v for v in properties["class_locations"].values() if len(v)]
        if i % 2 and foreground:
            voxels = foreground[rng.integers(len(foreground))]
            centre = voxels[rng.integers(len(voxels))][1:]
            start = [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, patch, image.shape)]
        else:
            start = [int(rng.integers(0, s - p + 1)) for p, s in zip(patch, image.shape)]
        window = tuple(slice(s, s + p) for s, p in zip(start, patch))
        out.append(np.ascontiguousarray(image[window][None, None], dtype=np.float32))
    return out


def quantize(model, calibration: list[np.ndarray], fp32_patterns: list[str]):
    import nncf
    return nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration),
                         preset=nncf.QuantizationPreset.PERFORMANCE,
                         ignored_scope=nncf.IgnoredScope(types=KEEP_FP32, patterns=fp32_patterns, validate=False))


def compile_model(core, model, threads: int):
    from nnunetv2_flare.inference.models.backends.openvino import compile_config
    return core.compile_model(model, "CPU", compile_config("fp32", threads)).create_infer_request()


def print_turns(runners: dict[str, Callable[[], object]], repeats: int, title: str) -> None:
    """One warm-up call each, then the runners take turns; medians and the per-round ratio to the first runner."""
    for run in runners.values():
        run()
    times = take_turns(runners, repeats)
    base = next(iter(runners))
    print(f"\n| {title} | median s | speed-up vs {base} (per round) |\n|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {np.median(t):.3f} | {median_ratio(times[base], t):.2f}x |")


def paper_network(work: Path) -> Path:
    from random_models import write_random_cascade
    return write_random_cascade(work, "Dataset220_FLAREBench", tiny=False)[1]


def int8_speed(core, organs: Path, threads: int, repeats: int) -> None:
    fp32 = core.read_model(str(logits_ir(organs)))
    x = np.random.default_rng(0).standard_normal((1, 1, 96, 96, 96)).astype(np.float32)
    requests = {"OpenVINO fp32": compile_model(core, fp32, threads)}
    for name, fp32_patterns in SCOPES.items():
        requests[f"OpenVINO int8, {name}"] = compile_model(core, quantize(fp32, [x, -x], fp32_patterns), threads)
    print_turns({k: (lambda r=r: r.infer({0: x})) for k, r in requests.items()}, repeats,
               "paper-size organ network, one 96^3 patch")


def other_runtimes(core, organs: Path, threads: int, repeats: int, which: list[str]) -> None:
    import warnings

    import torch

    from nnunetv2_flare.inference.models.loading import load_phase
    from nnunetv2_flare.networks.inference_graph import build_inference_graph
    torch.set_num_threads(threads)
    network = load_phase(organs, backend="torch").model.network
    x = torch.randn(1, 1, 96, 96, 96)
    openvino = compile_model(core, core.read_model(str(logits_ir(organs))), threads)
    runners = {"PyTorch eager fp32": lambda: network(x), "OpenVINO fp32": lambda: openvino.infer({0: x.numpy()})}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "onnxruntime" in which:
            import onnxruntime as ort
            path = organs / "fold_all" / "study_inference_graph.onnx"
            torch.onnx.export(build_inference_graph(network), (x,), str(path), opset_version=17, dynamo=False)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            runners["ONNX Runtime fp32 (inference graph)"] = lambda: session.run(None, {name: x.numpy()})
        if "compile" in which:
            compiled = torch.compile(network)
            t = time.perf_counter()
            compiled(x)
            print(f"torch.compile: first call (compiling) {time.perf_counter() - t:.1f} s")
            runners["torch.compile (inductor)"] = lambda: compiled(x)
        print_turns(runners, repeats, "paper-size organ network, one 96^3 patch")


def accuracy(core, demo: Path, threads: int, n_calibration: int, n_held_out: int) -> None:
    import json

    from nnunetv2_flare.demo import DEMO_CONFIGURATION, DEMO_ORGAN_TRAINER, PLANS
    results = next((demo / "nnUNet_results").glob("Dataset*"))
    organs = results / f"{DEMO_ORGAN_TRAINER}__{PLANS}__{DEMO_CONFIGURATION}"
    plans = json.loads((organs / "plans.json").read_text())
    config = plans["configurations"][DEMO_CONFIGURATION]
    folder = demo / "nnUNet_preprocessed" / results.name / config["data_identifier"]
    identifiers = sorted(p.name[:-4] for p in folder.glob("*.pkl"))
    held = max(1, len(identifiers) // 4)
    calibration = patches(folder, identifiers[:-held], config["patch_size"], n_calibration, seed=0)
    held_out = patches(folder, identifiers[-held:], config["patch_size"], n_held_out, seed=1)
    fp32 = core.read_model(str(logits_ir(organs)))
    reference = compile_model(core, fp32, threads)
    expected = [reference.infer({0: x})[0].argmax(1) for x in held_out]
    print(f"\n| demo organ network ({len(identifiers) - held} calibration cases, {n_calibration} patches; "
          f"{held} held-out cases, {n_held_out} patches) | foreground agreement with fp32 |\n|---|---|")
    for name, fp32_patterns in SCOPES.items():
        request = compile_model(core, quantize(fp32, calibration, fp32_patterns), threads)
        same = total = 0
        for x, a in zip(held_out, expected):
            b = request.infer({0: x})[0].argmax(1)
            foreground = (a > 0) | (b > 0)
            same, total = same + int(((a == b) & foreground).sum()), total + int(foreground.sum())
        print(f"| int8, {name} | {100 * same / max(total, 1):.2f} % |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", type=Path, help="output folder of nnUNetv2_flare_demo (accuracy); without: speed only")
    p.add_argument("--work", type=Path, default=Path("/tmp/flare_cascade_benchmark/results"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--calibration", type=int, default=48)
    p.add_argument("--held_out", type=int, default=24)
    p.add_argument("--only", nargs="+", choices=["int8", "onnxruntime", "compile"],
                   default=["int8", "onnxruntime", "compile"])
    args = p.parse_args()
    import openvino as ov
    core = ov.Core()
    organs = paper_network(args.work)
    if "int8" in args.only:
        int8_speed(core, organs, args.threads, args.repeats)
        if args.demo:
            accuracy(core, args.demo, args.threads, args.calibration, args.held_out)
    if {"onnxruntime", "compile"} & set(args.only):
        other_runtimes(core, organs, args.threads, args.repeats, args.only)


if __name__ == "__main__":
    main()
