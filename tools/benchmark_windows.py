"""What one window of the organ network costs, per voxel, as the window grows (paper-size network, random weights).

Each (window, runtime) runs in its own process: the network's labels (argmax) on one window, --repeats warm passes
after a first one, the median reported, and the process's peak memory during the passes above what it held before
them (the set-up: network, compiled model; Linux's peak counter is reset after the set-up). OpenVINO converts the
network at the 96^3 patch and reshapes it to the window, as the predictor does. The 96^3 patch (the paper's tile) is
always measured, in the same run, as the baseline of the per-voxel ratio. Figures: docs/performance.md, "Windows
fitted to the crop".

    python tools/benchmark_windows.py                                   # both runtimes, the default windows
    python tools/benchmark_windows.py --windows 96x96x96 144x160x224 --backends torch
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import subprocess
import sys
import time

import numpy as np

# z y x: a 512 x 512 x 218 CT's crop as one window (144 x 160 x 224), its halves, sixths, and smaller
DEFAULT_WINDOWS = ("80x80x80", "96x96x96", "144x80x112", "144x160x112", "144x160x224")


def window_shape(text: str) -> tuple[int, ...]:
    shape = tuple(int(v) for v in text.lower().split("x"))
    if len(shape) != 3 or any(n <= 0 or n % 16 for n in shape):
        raise argparse.ArgumentTypeError(f"invalid window {text!r}: three multiples of 16 as ZxYxX, e.g. 96x96x96")
    return shape


def memory_kib(field: str) -> int:
    """VmRSS / VmHWM of this process (Linux), KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure(shape: tuple[int, ...], backend: str, repeats: int, threads: int) -> dict:
    """One window in this process (called in a child): seconds per pass and the peak memory above the set-up."""
    import torch

    from nnunetv2_flare.networks.architectures.flare_organ_net import FlareOrganNet
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    network = FlareOrganNet(1, 14, deep_supervision=False).eval()
    x = np.random.default_rng(0).normal(size=(1, 1, *shape)).astype(np.float32)
    if backend == "openvino":
        from nnunetv2_flare.inference.models.backends.openvino import compile_config, compile_on_cpu, convert
        model = convert(network, (1, 1, 96, 96, 96))
        model.reshape({0: [1, 1, *shape]})
        request = compile_on_cpu(model, compile_config("fp32", threads)).create_infer_request()
        del model
        run = lambda: request.infer({0: x})  # noqa: E731
    else:
        tensor = torch.from_numpy(x)

        def run() -> None:
            with torch.inference_mode():
                network(tensor).argmax(1)
    gc.collect()
    before = memory_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    peak = memory_kib("VmHWM")
    seconds = float(np.median(times[1:]))
    return {"window_zyx": list(shape), "backend": backend, "voxels": math.prod(shape), "first_s": round(times[0], 3),
            "median_s": round(seconds, 3), "us_per_voxel": round(seconds / math.prod(shape) * 1e6, 3),
            "peak_over_setup_gb": round(max(0, peak - before) * 1024 / 1e9, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--windows", nargs="+", type=window_shape, default=[window_shape(w) for w in DEFAULT_WINDOWS],
                   help="window shapes as ZxYxX (multiples of 16), e.g. 144x160x224")
    p.add_argument("--backends", nargs="+", choices=["torch", "openvino"], default=["torch", "openvino"])
    p.add_argument("--repeats", type=int, default=2, help="warm passes per window after the first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the rows as JSON")
    p.add_argument("--_one", nargs=2, metavar=("WINDOW", "BACKEND"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._one:
        print("RESULT " + json.dumps(measure(window_shape(args._one[0]), args._one[1], args.repeats, args.threads)))
        return

    from benchmark_cascade import cpu_flags
    windows = list(dict.fromkeys([(96, 96, 96), *args.windows]))  # the 96^3 tile first: the baseline
    rows = []
    for backend in args.backends:
        for shape in windows:
            out = subprocess.run([sys.executable, __file__, "--repeats", str(args.repeats), "--threads",
                                  str(args.threads), "--_one", "x".join(map(str, shape)), backend],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(json.loads([line for line in out.splitlines() if line.startswith("RESULT ")][-1][7:]))
    print("\n| runtime | window, z y x | voxels | median s | us a voxel | per voxel vs 96^3 | peak over set-up |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        base = next(r for r in rows if r["backend"] == row["backend"] and r["window_zyx"] == [96, 96, 96])
        print(f"| {row['backend']} | {' x '.join(map(str, row['window_zyx']))} | {row['voxels'] / 1e6:.2f} M | "
              f"{row['median_s']} | {row['us_per_voxel']} | {row['us_per_voxel'] / base['us_per_voxel']:.2f}x | "
              f"{row['peak_over_setup_gb']} GB |")
    print(f"\nmachine: {cpu_flags()}, {args.threads} threads")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
