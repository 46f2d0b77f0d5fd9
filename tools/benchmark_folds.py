"""Cost of each extra fold in a fold ensemble (`nnUNetv2_flare_predict -f 0 1 ...`), per runtime.

Two measurements, the paper's networks with random weights (folds 0, 1, 2 differ in their weights):
1. one 96^3 patch through the organ phase model, in this process, for 1, 2 and 3 folds taking turns: the median
   of --repeats rounds after one warm-up pass. One fold is the labels-out model (OpenVINO: argmax in the graph); an
   ensemble runs each fold's logits graph, softmax, the running mean and the argmax in NumPy;
2. for --case_backends, a whole real CT (`--case`, default the TotalSegmentator DICOM slab) through the cascade in
   this process, per fold count: the 'segment_network' and 'total' stage times of the predictor's report (the
   locator ensembles too; the first fold count's run includes OpenVINO's compile).

    python tools/benchmark_folds.py [--backends torch openvino] [--threads 2] [--repeats 5] [--folds 3]
        [--case_backends openvino]

OpenVINO's one-off conversions (one logits graph per fold and phase, ~30 s each for the organ network) happen before
timing. Timings on a shared host vary; run it on an idle machine for numbers to quote.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"


def patch_rounds(phases: dict[int, object], patch: tuple[int, ...], repeats: int) -> dict[int, float]:
    """Median seconds of one patch per fold count; the fold counts take turns within each round, so that a busy
    moment of a shared host spreads over all of them."""
    x = np.random.default_rng(0).normal(0, 1, (1, 1, *patch)).astype(np.float32)
    for phase in phases.values():
        phase.model(x, None)  # first pass: compilation / allocation
    times: dict[int, list[float]] = {n: [] for n in phases}
    for _ in range(repeats):
        for n, phase in phases.items():
            t = time.perf_counter()
            phase.model(x, None)
            times[n].append(time.perf_counter() - t)
    return {n: statistics.median(v) for n, v in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--backends", nargs="+", default=["torch", "openvino"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--folds", type=int, default=3, help="measure 1..N folds (default 3)")
    p.add_argument("--case", default=str(REAL / "totalsegmentator" / "example_ct_dicom"))
    p.add_argument("--case_backends", nargs="*", default=["openvino"],
                   help="runtimes that also predict the whole case per fold count (default: openvino)")
    p.add_argument("--results", default=None, help="model folder to reuse (default: a new temporary one)")
    p.add_argument("--json", default=None, help="write the numbers to this JSON file")
    args = p.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    from random_models import write_random_cascade

    from nnunetv2_flare.inference import CascadeSettings, FlareCascadePredictor, ModelSettings
    from nnunetv2_flare.inference.models.loading import load_phase

    results = Path(args.results or tempfile.mkdtemp(prefix="flare_folds_"))
    for k in range(args.folds):
        if not any(results.glob(f"Dataset220_FLARE/*flare_organs/fold_{k}/checkpoint_final.pth")):
            write_random_cascade(results, tiny=False, fold=k, seed_offset=10 * k)
    base = results / "Dataset220_FLARE"
    locator = next(base.glob("*flare_locator"))
    organs = next(base.glob("*flare_organs"))
    rows = []
    for backend in args.backends:
        phases = {n: load_phase(organs, list(range(n)), backend=backend, threads=args.threads)
                  for n in range(1, args.folds + 1)}
        patch = patch_rounds(phases, phases[1].patch_size, args.repeats)
        del phases
        for n in range(1, args.folds + 1):
            row = {"backend": backend, "folds": n, "patch_s": round(patch[n], 3)}
            if backend in args.case_backends:
                predictor = FlareCascadePredictor.from_folders(
                    locator, organs, ModelSettings(fold=list(range(n)), backend=backend, threads=args.threads),
                    CascadeSettings(progress=False))
                case = predictor.run(args.case)
                row.update(case_tiles=case.n_patches, case_segment_network_s=round(case.timings["segment_network"], 2),
                           case_total_s=round(case.timings["total"], 2))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| runtime | folds | one 96^3 patch | per extra fold | whole case: organ network | total |")
    print("|---|---|---|---|---|---|")
    for backend in args.backends:
        mine = [r for r in rows if r["backend"] == backend]
        for r in mine:
            extra = "" if r["folds"] == 1 else f"+{(r['patch_s'] - mine[0]['patch_s']) / (r['folds'] - 1):.2f} s"
            case = f"{r['case_segment_network_s']:.1f} s ({r['case_tiles']} tiles) | {r['case_total_s']:.1f} s" \
                if "case_tiles" in r else "– | –"
            print(f"| {backend} | {r['folds']} | {r['patch_s']:.2f} s | {extra} | {case} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
