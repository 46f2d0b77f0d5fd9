"""A demo training step with OpenMP's default wait policy against OMP_WAIT_POLICY=PASSIVE, alone and beside another
busy PyTorch process, in one run (docs/demo.md, "Sharing the CPU").

    python tools/benchmark_thread_sharing.py [--rounds 3] [--steps 5] [--threads N]

Each measurement is a fresh process (OpenMP reads the policy once, at start) that builds the demo's Phase-2 network
and times `--steps` training steps after a warm-up step (demo_timing.measure_steps, what the demo's estimate uses).
"Beside" starts a competitor first: a PyTorch process with the same thread count and OpenMP's default policy,
convolving in a loop, as a second training on a laptop would. The conditions take turns round by round so that a
drifting host hits them alike. Prints a Markdown table of the median step per condition and the CPU flags.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmark_cascade import cpu_flags

COMPETITOR = """
import torch
torch.set_num_threads({threads})
x, w = torch.randn(2, 16, 48, 48, 48), torch.randn(16, 16, 3, 3, 3)
while True:
    torch.nn.functional.conv3d(x, w, padding=1)
"""

MEASURE = """
import json, sys
from nnunetv2_flare.demo import DemoSettings, measure_this_machine
steps = measure_this_machine(DemoSettings(threads={threads}), steps={steps})
print(json.dumps({{"locator": steps.locator, "organs": steps.organs}}))
"""


def measure(policy: str | None, threads: int, steps: int) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    done = subprocess.run([sys.executable, "-c", MEASURE.format(threads=threads, steps=steps)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    conditions = [(beside, policy) for beside in (False, True) for policy in (None, "PASSIVE")]
    results: dict[tuple, list[dict[str, float]]] = {c: [] for c in conditions}
    for _ in range(args.rounds):
        for beside, policy in conditions:
            competitor = None
            if beside:
                env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
                competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR.format(threads=args.threads)],
                                              env=env)
                time.sleep(3)  # its import and first convolutions
            try:
                results[(beside, policy)].append(measure(policy, args.threads, args.steps))
            finally:
                if competitor:
                    competitor.kill()
                    competitor.wait()
    print(f"CPU flags: {cpu_flags()}; {os.cpu_count()} cores, {args.threads} threads, {args.rounds} rounds of "
          f"{args.steps} steps\n")
    print("| condition | OMP_WAIT_POLICY | Phase-1 step, s (median) | Phase-2 step, s (median) |")
    print("|---|---|---|---|")
    for beside, policy in conditions:
        rows = results[(beside, policy)]
        print(f"| {'beside a busy 2-thread PyTorch process' if beside else 'alone'} | {policy or 'default'} | "
              f"{statistics.median(r['locator'] for r in rows):.3f} | "
              f"{statistics.median(r['organs'] for r in rows):.3f} |")


if __name__ == "__main__":
    main()
