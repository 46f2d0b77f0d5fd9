"""Running a command and measuring it: exit code, wall seconds, CPU seconds and the peak resident memory of the
command's own process (the benchmarks' one measurement helper).

Peak memory: the command is forked from a small launcher process, not from the benchmark. Linux carries a process's
ru_maxrss across exec, so a command started straight from a big parent (a benchmark holding networks or a huge
volume) would report the parent's size, as `peak_rss_gb` in benchmark_cascade.py notes for VmHWM's sake; forked from
the launcher, the command's ru_maxrss (wait4) is its own.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# forks the command, waits for it with wait4 and writes its exit code and rusage as JSON to argv[1]
LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"code": os.waitstatus_to_exitcode(status), "cpu_s": usage.ru_utime + usage.ru_stime,
               "peak_rss_bytes": usage.ru_maxrss * 1024}, f)
"""


def run_measured(cmd: list[str], log: Path, env: dict | None = None,
                 timeout: float | None = None) -> tuple[int, float, float, int]:
    """(exit code, wall seconds, CPU seconds, peak resident bytes) of one command; its output (stdout and stderr)
    goes to `log`. The CPU time tells a slow run from a starved one on a shared host."""
    with tempfile.TemporaryDirectory() as tmp, open(log, "w") as out:
        usage_file = Path(tmp) / "usage.json"
        start = time.time()
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(usage_file), *map(str, cmd)], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        wall = time.time() - start
        usage = json.loads(usage_file.read_text())
    return usage["code"], wall, usage["cpu_s"], usage["peak_rss_bytes"]


def run_measured_output(cmd: list[str], env: dict | None = None,
                        timeout: float | None = None) -> tuple[int, float, float, int, str]:
    """`run_measured`, with the command's output returned as text instead of written to a log."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "output.log"
        measured = run_measured(cmd, log, env, timeout)
        return (*measured, log.read_text())


if __name__ == "__main__":  # python tools/measure.py COMMAND ...: the measurement of one command, as JSON
    code, wall, cpu, peak = run_measured(sys.argv[1:], Path(os.devnull))
    print(json.dumps({"code": code, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "peak_rss_bytes": peak}))
