"""tools/measure.py, the benchmarks' measurement helper: the peak memory it reports is the command's own, also when
the process that starts it is large (Linux carries ru_maxrss across exec, so wait4 on a command started straight
from a large parent reports the parent's size)."""
from __future__ import annotations

import sys

import numpy as np

from tool_modules import load_tool

run_measured = load_tool("measure").run_measured


def test_peak_memory_is_the_commands_own_not_its_parents(tmp_path):
    parent = np.ones(400 * 2 ** 20 // 8)  # this process holds 400 MiB while it starts the command
    small = [sys.executable, "-c", "print('small')"]
    code, wall, cpu, peak = run_measured(small, tmp_path / "small.log")
    assert code == 0 and (tmp_path / "small.log").read_text() == "small\n" and wall > 0 and cpu > 0
    assert peak < 200 * 2 ** 20, peak
    big = [sys.executable, "-c", "import numpy as np; a = np.ones(300 * 2 ** 20 // 8); print(a.sum() > 0)"]
    code, _, _, peak_big = run_measured(big, tmp_path / "big.log")
    assert code == 0 and peak_big > 300 * 2 ** 20 > peak
    assert run_measured([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "fail.log")[0] == 3
    del parent
