"""Shared by the bench modules: run one command in a fresh child process, one thread, and measure it."""

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1"}


def measure(cmd):
    """(wall s, peak RSS MB, CPU s: user + system of all its threads) of one command, from a fresh child
    and the resource usage of its waited children."""
    code = (
        "import resource, subprocess, sys, time\n"
        "t0 = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
        "wall = time.perf_counter() - t0\n"
        "if p.returncode: sys.stderr.write(p.stderr.decode()[-2000:]); sys.exit(1)\n"
        "use = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(wall, use.ru_maxrss / 1024, use.ru_utime + use.ru_stime)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *map(str, cmd)], capture_output=True, text=True, env=ENV)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr}")
    wall, rss, cpu = proc.stdout.split()
    return float(wall), float(rss), float(cpu)


def run_measured(cmd):
    """(wall s, peak RSS MB) of one command (see `measure`)."""
    return measure(cmd)[:2]
