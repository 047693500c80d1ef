"""Memory of one node process: the peak resident set size (VmHWM) of every node of a real
`mcepl launch`, read from /proc/<pid>/status while the run goes on (Linux only).

Kubernetes resource requests (`mcepl topology kube`) come from these figures: a node's container
holds exactly one such process. RSS counts the pages of torch's shared libraries the process
touched; a container's memory cgroup is charged the same pages, so it is the figure to request.

    python benchmarks/node_memory.py --nodes 20 --rounds 20 --model small-cnn
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def node_pids() -> dict[int, int]:
    """{pid: node id} of every `mcepl node` process (any launcher) on this machine, spawned or
    forked."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        try:  # forked by the launcher's fork server: named "mcepl-node N"
            comm = (d / "comm").read_text().split()
        except OSError:
            continue
        if len(comm) == 2 and comm[0] == "mcepl-node" and comm[1].isdigit():
            out[int(d.name)] = int(comm[1])
            continue
        if "--id" in args and "--topology" in args and any("node" in a for a in args[:4]):
            try:
                out[int(d.name)] = int(args[args.index("--id") + 1])
            except (ValueError, IndexError):
                pass
    return out


def status_kib(pid: int) -> dict[str, int]:
    vals = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                vals[key] = int(rest.split()[0])
    except OSError:
        pass
    return vals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--model", default="small-cnn")
    ap.add_argument("--algorithm", default="mcepl")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    args = ap.parse_args()

    before = set(node_pids())  # other people's nodes on a shared machine are not ours
    out = Path(args.out or tempfile.mkdtemp(prefix="mcepl-mem-")) / "run"
    exe = shutil.which("mcepl")
    cmd = ([exe] if exe else [sys.executable, "-m", "mcepl.launcher.cli"]) + [
        "launch", "--nodes", str(args.nodes), "--rounds", str(args.rounds), "--model", args.model,
        "--algorithm", args.algorithm, "--eval-every", str(args.eval_every), "--out", str(out)]
    launcher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak: dict[int, int] = {}  # node id -> max VmHWM seen (KiB)
    while launcher.poll() is None:
        for pid, node in node_pids().items():
            if pid in before:
                continue
            hwm = status_kib(pid).get("VmHWM")
            if hwm is not None:
                peak[node] = max(peak.get(node, 0), hwm)
        time.sleep(0.5)
    if launcher.returncode != 0:
        sys.exit(f"launch failed ({launcher.returncode}): {launcher.stderr.read()[-2000:]}")
    mib = sorted(v / 1024 for v in peak.values())
    result = {"model": args.model, "algorithm": args.algorithm, "nodes": args.nodes,
              "rounds": args.rounds, "nodes_seen": len(mib),
              "peak_rss_mib": {"min": round(mib[0], 1), "median": round(statistics.median(mib), 1),
                               "max": round(mib[-1], 1)},
              "load_avg": os.getloadavg()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
