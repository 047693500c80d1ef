"""The paper's setting on one machine: 20 AlexNet nodes on CIFAR-10-format data, measured side
by side in one invocation so that machine noise hits every figure alike.

    python benchmarks/throughput.py                              # the full measurement
    python benchmarks/throughput.py --nodes 4 --rounds 4 --train-images 5000 --test-images 1000

It writes synthetic CIFAR-10-format batch files (random class templates plus noise, the official
pickle layout, read by the normal loader and its decode cache) and then measures:

  (s) start-up: `mcepl launch` of --start-nodes small-CNN nodes (2 rounds) with every node
      spawned as its own interpreter (MCEPL_NODE_START=spawn), then forked from the launcher's
      fork server (the default): seconds until the last node ended round 0, summed PSS and RSS;
  (a) the compute floor: plain forward + backward of this project's AlexNet on batches of 128, in
      one process using every usable core, images/s, with PyTorch's LocalResponseNorm and with
      the project's fast one (alternating, median step time);
  (b) `mcepl launch` with N AlexNet nodes (MCE-PL, the default config otherwise): images/s over
      the rounds without evaluation (N x batch / median round time, rounds 1..R-1; round R and
      round 0 evaluate), and the summed peak RSS (VmHWM) of the node processes, plus their summed
      PSS (what they really occupy, shared pages split) at its highest;
  (c) `mcepl launch --inprocess` on the same configuration: images/s, peak RSS of its process;
  (d) one evaluation of all N nodes (each on its full local test set): seconds, the longest
      node's `eval_s` at the last round of (b) (the nodes evaluate at the same time); and, in one
      process with one thread (as a node), the evaluation of `--eval-nodes` nodes done the old
      way (PyTorch's LRN and max-pool, no_grad, batches of 1000) against the new (the fast
      layers, inference_mode, batch "auto"): seconds, and whether the accuracies are equal.

It also measures what a node process costs before it loads any data (Python + torch + mcepl
imports, then the model built), checks that (b) and (c) produced the same per-node losses and
accuracies, and prints a table; everything goes to OUT/throughput.json as well. Run it on an
otherwise idle machine (`nice` keeps it polite on a shared one; note the load it reports).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path

from mcepl.node.data.synthetic import write_synthetic_cifar10
from mcepl.node.threads import usable_cores

BATCH = 128

FLOOR = r"""
import json, statistics, sys, time, torch
import torch.nn.functional as F
from mcepl.node.models import AlexNet
torch.set_num_threads(int(sys.argv[1])); steps = int(sys.argv[2])
gen = torch.Generator().manual_seed(0)
x = torch.randn(128, 3, 32, 32, generator=gen); y = torch.randint(0, 10, (128,), generator=gen)
models = {"torch_lrn": AlexNet(fast_layers=False), "fast_lrn": AlexNet()}  # same cost as built
def step(m):
    m.zero_grad(set_to_none=True)
    F.cross_entropy(m(x), y).backward()
times = {k: [] for k in models}
for m in models.values():
    step(m)  # warm-up
for _ in range(steps):
    for k, m in models.items():
        t = time.perf_counter(); step(m); times[k].append(time.perf_counter() - t)
print(json.dumps({k: 128 / statistics.median(v) for k, v in times.items()}))
"""

PROCESS_COST = r"""
import json, sys
def rss():
    d = dict(l.split(":", 1) for l in open("/proc/self/status"))
    return {k: int(d[k].split()[0]) // 1024 for k in ("VmRSS", "RssAnon", "RssFile")}
out = {"python": rss()}
import torch
out["torch"] = rss()
import mcepl.node.main, mcepl.node.factory
out["mcepl"] = rss()
from mcepl.node.models import MaskedModel, build_model
MaskedModel(build_model(sys.argv[1], tuple(json.loads(sys.argv[2])), 10, 0))
out["model"] = rss()
print(json.dumps(out))
"""

EVAL = r"""
import json, sys, time, torch
from torch import nn
import mcepl.node.plugins  # noqa: F401 - fills the registries
from mcepl.config import load_config
from mcepl.topology import load_topology
from mcepl.node.factory import all_shards, build_algorithm, build_evaluator
from mcepl.node.models.lrn import FastLocalResponseNorm
from mcepl.node.models.pool import FastMaxPool2d
cfg = load_config(sys.argv[1]); topo = load_topology(sys.argv[2]); k = int(sys.argv[3])
torch.set_num_threads(1)  # as each of the nodes
shards = all_shards(cfg, topo)
algos = [build_algorithm(cfg, topo, i, shards[i]) for i in range(k)]
evals = [build_evaluator(cfg, shards[i]) for i in range(k)]
def old_accuracy(predict, x, y, batch_size=1000):  # what evaluation.accuracy did before
    correct = 0
    with torch.no_grad():
        for s in range(0, len(y), batch_size):
            pred = predict(x[s:s + batch_size]).argmax(dim=1)
            correct += int((pred == y[s:s + batch_size]).sum())
    return correct / len(y)
def set_layers(a, fast):  # PyTorch's LRN and max-pool, or the project's
    feats = a.ctx.model.module.features
    for i, m in enumerate(feats):
        if isinstance(m, nn.LocalResponseNorm):
            args = (m.size, m.alpha, m.beta, m.k)
            feats[i] = FastLocalResponseNorm(*args) if fast else nn.LocalResponseNorm(*args)
        elif isinstance(m, nn.MaxPool2d):
            args = (m.kernel_size, m.stride, m.padding)
            feats[i] = FastMaxPool2d(*args) if fast else nn.MaxPool2d(*args)
res = {"nodes": k, "images": sum(len(a.ctx.shard.test_y) for a in algos)}
accs = {}
for name, fast in (("old", False), ("new", True)):
    for a in algos:
        set_layers(a, fast)
    t = time.perf_counter()
    if fast:
        accs[name] = [ev(a) for a, ev in zip(algos, evals)]
    else:
        accs[name] = [old_accuracy(a.predict, ev.x, ev.y) for a, ev in zip(algos, evals)]
    res[name + "_s"] = time.perf_counter() - t
res["same_accuracy"] = accs["old"] == accs["new"]
res["batch"] = evals[0].batch_size
print(json.dumps(res))
"""


def mcepl_command() -> list[str]:
    script = Path(sys.executable).with_name("mcepl")
    if script.exists():
        return [str(script)]
    found = shutil.which("mcepl")
    return [found] if found else [sys.executable, "-m", "mcepl.cli"]


def run_json(code: str, *args: str, timeout: float = 3600) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class MemorySampler(threading.Thread):
    """Polls /proc every `period` s for processes whose command line holds all of `needles`:
    peak RSS (VmHWM) per process, and the highest summed RSS and PSS seen at one time."""

    def __init__(self, needles: list[str], period: float = 0.5, forked: str | None = None) -> None:
        super().__init__(daemon=True)
        self.needles = [n.encode() for n in needles]
        # nodes forked by the launcher's fork server: named "mcepl-node N", the server's
        # command line (which names the run directory `forked`)
        self.forked = forked.encode() if forked else None
        self.period = period
        self.hwm: dict[int, int] = {}
        self.max_sum_rss = self.max_sum_pss = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.period):
            rss_sum = pss_sum = 0
            for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if not all(n in cmd for n in self.needles) and not (
                            self.forked and self.forked in cmd and Path(
                                f"/proc/{pid}/comm").read_text().startswith("mcepl-node")):
                        continue
                    status = dict(line.split(":", 1) for line in
                                  Path(f"/proc/{pid}/status").read_text().splitlines())
                    hwm = int(status["VmHWM"].split()[0]) * 1024
                    rss_sum += int(status["VmRSS"].split()[0]) * 1024
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith("Pss:"):
                            pss_sum += int(line.split()[1]) * 1024
                except (OSError, KeyError, ValueError):
                    continue
                self.hwm[pid] = max(self.hwm.get(pid, 0), hwm)
            self.max_sum_rss = max(self.max_sum_rss, rss_sum)
            self.max_sum_pss = max(self.max_sum_pss, pss_sum)


def read_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def round_seconds(records: list[dict], rounds: int) -> list[float]:
    """Wall time of rounds 1..R-1 (no evaluation): last node's end minus the previous one's."""
    done: dict[int, float] = defaultdict(float)
    for r in records:
        done[r["round"]] = max(done[r["round"]], r["t_end"])
    return [done[k] - done[k - 1] for k in range(1, rounds)]


def run_mcepl(args: argparse.Namespace, run_dir: Path, *extra: str,
              env: dict[str, str] | None = None, rounds: int | None = None) -> tuple[dict, float]:
    cmd = [*mcepl_command(), "launch", "--config", str(args.out / "config.toml"),
           "--topology", str(args.out / "topology.json"), "--out", str(run_dir), "--quiet",
           *extra]
    inproc = "--inprocess" in extra
    sampler = MemorySampler(["launch", str(run_dir)] if inproc else ["mcepl.node.main",
                                                                      str(run_dir)],
                            forked=None if inproc else str(run_dir))
    sampler.start()
    t0 = time.perf_counter()
    t_start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    records = read_records(run_dir)
    rounds = rounds or args.rounds
    times = round_seconds(records, rounds)
    last = [r["eval_s"] for r in records if r["round"] == rounds and "eval_s" in r]
    first = [r["eval_s"] for r in records if r["round"] == 0 and "eval_s" in r]
    nodes = len({r["node"] for r in records})
    return {
        "images_per_s": nodes * BATCH / statistics.median(times),
        "round_s": times,
        "processes": len(sampler.hwm),
        "sum_peak_rss_gb": sum(sampler.hwm.values()) / 1e9,
        "max_peak_rss_mb": max(sampler.hwm.values(), default=0) / 1e6,
        "max_sum_rss_gb": sampler.max_sum_rss / 1e9,
        "max_sum_pss_gb": sampler.max_sum_pss / 1e9,
        "eval_last_s": max(last, default=float("nan")),
        "eval_round0_s": max(first, default=float("nan")),
        "wall_s": wall,
        "round0_done_s": max(r["t_end"] for r in records if r["round"] == 0) - t_start,
        "records": {(r["round"], r["node"]): r for r in records},
    }, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=textwrap.dedent(__doc__ or ""),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=6, help="rounds R (>= 3); 0 and R evaluate")
    ap.add_argument("--train-images", type=int, default=50_000)
    ap.add_argument("--test-images", type=int, default=10_000)
    ap.add_argument("--floor-steps", type=int, default=8, help="timed steps per LRN in (a)")
    ap.add_argument("--eval-nodes", type=int, default=4, help="nodes in the old/new eval (d)")
    ap.add_argument("--parts", default="sabcd",
                    help="which of (s) (a) (b) (c) (d) to run, e.g. 'b' or 'ad' (default: all)")
    ap.add_argument("--start-nodes", type=int, default=40,
                    help="small-CNN nodes in the start-up comparison (s)")
    ap.add_argument("--out", type=Path, default=Path("runs/throughput"))
    ap.add_argument("--timeout", type=float, default=7200, help="per step, seconds")
    args = ap.parse_args()
    if args.rounds < 3:
        ap.error("--rounds must be >= 3 (rounds 0 and R evaluate)")
    out: Path = args.out
    for sub in ("networked", "inprocess", "startup-spawn", "startup-fork"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)
    cores = usable_cores()
    load0 = os.getloadavg()
    data = out / "data"
    stamp = data / f"written-{args.train_images}-{args.test_images}"
    if not stamp.exists():
        shutil.rmtree(data, ignore_errors=True)
        print(f"writing synthetic CIFAR-10 files ({args.train_images} + {args.test_images} "
              f"images) to {data}", flush=True)
        write_synthetic_cifar10(data, n_train=args.train_images, n_test=args.test_images)
        stamp.touch()
    (out / "config.toml").write_text(textwrap.dedent(f"""\
        [data]
        dataset = "cifar10"
        root = "{data.resolve()}"
        download = false
        [model]
        name = "alexnet"
        [run]
        rounds = {args.rounds}
        eval_every = {args.rounds}
        """))
    subprocess.run([*mcepl_command(), "topology", "generate", "--kind", "er", "--nodes",
                    str(args.nodes), "--p", "0.5", "--seed", "0", "-o",
                    str(out / "topology.json")], check=True, capture_output=True)
    if "s" in args.parts:
        subprocess.run([*mcepl_command(), "topology", "generate", "--kind", "er", "--nodes",
                        str(args.start_nodes), "--p", "0.5", "--seed", "0", "-o",
                        str(out / "topology-start.json")], check=True, capture_output=True)
    res: dict = {"nodes": args.nodes, "rounds": args.rounds, "cores": cores, "batch": BATCH,
                 "start_nodes": args.start_nodes}

    print("node process before data ...", flush=True)
    res["process_mb"] = {m: run_json(PROCESS_COST, m, s) for m, s in
                         (("small-cnn", "[1, 28, 28]"), ("alexnet", "[3, 32, 32]"))}
    if "s" in args.parts:
        res["startup"] = {}
        for how in ("spawn", "fork"):
            print(f"(s) start-up: {args.start_nodes} small-CNN nodes, {how} ...", flush=True)
            r, _ = run_mcepl(args, out / f"startup-{how}", "--model", "small-cnn",
                             "--rounds", "2", "--eval-every", "2",
                             "--topology", str(out / "topology-start.json"),
                             env={**os.environ, "MCEPL_NODE_START": how}, rounds=2)
            res["startup"][how] = {k: v for k, v in r.items() if k != "records"}
    if "a" in args.parts:
        print("(a) compute floor ...", flush=True)
        res["floor"] = run_json(FLOOR, str(cores), str(args.floor_steps))
    net = inp = None
    if "b" in args.parts:
        print(f"(b) mcepl launch, {args.nodes} nodes, {args.rounds} rounds ...", flush=True)
        net, _ = run_mcepl(args, out / "networked")
    if "c" in args.parts:
        print("(c) mcepl launch --inprocess ...", flush=True)
        inp, _ = run_mcepl(args, out / "inprocess", "--inprocess")
    if "d" in args.parts:
        print(f"(d) evaluation of {args.eval_nodes} nodes, old and new, in one process ...",
              flush=True)
        res["eval"] = run_json(EVAL, str(out / "config.toml"), str(out / "topology.json"),
                               str(min(args.eval_nodes, args.nodes)))
    if net is not None and inp is not None:
        keys = ("train_loss", "test_acc", "density", "bytes_sent", "bytes_received")
        same = net["records"].keys() == inp["records"].keys() and all(
            net["records"][k].get(f) == inp["records"][k].get(f)
            for k in net["records"] for f in keys)
        res["networked_equals_inprocess"] = same
    for name, r in (("networked", net), ("inprocess", inp)):
        if r is not None:
            res[name] = {k: v for k, v in r.items() if k != "records"}
    res["loadavg_before"], res["loadavg_after"] = load0, os.getloadavg()
    (out / "throughput.json").write_text(json.dumps(res, indent=1))
    print_table(res)


def print_table(res: dict) -> None:
    fl, net, inp, ev = (res.get(k) for k in ("floor", "networked", "inprocess", "eval"))
    floor = fl["fast_lrn"] if fl else None

    def ratio(v: float) -> str:
        return f"{v / floor:.2f}x" if floor else ""

    rows = []
    if fl:
        rows += [("(a) floor, torch LRN", f"{fl['torch_lrn']:.0f} img/s", ratio(fl["torch_lrn"])),
                 ("(a) floor, fast LRN", f"{floor:.0f} img/s", "1.00x")]
    if net:
        rows.append((f"(b) mcepl launch, {res['nodes']} nodes",
                     f"{net['images_per_s']:.0f} img/s", ratio(net["images_per_s"])))
    if inp:
        rows.append(("(c) in-process driver", f"{inp['images_per_s']:.0f} img/s",
                     ratio(inp["images_per_s"])))
    if net:
        rows += [(f"(b) summed peak RSS, {net['processes']} nodes",
                  f"{net['sum_peak_rss_gb']:.2f} GB", f"max node {net['max_peak_rss_mb']:.0f} MB"),
                 ("(b) summed PSS at its highest", f"{net['max_sum_pss_gb']:.2f} GB", "")]
    if inp:
        rows.append(("(c) in-process peak RSS", f"{inp['sum_peak_rss_gb']:.2f} GB", ""))
    if net:
        rows.append((f"(d) eval of all {res['nodes']} nodes (networked)",
                     f"{net['eval_last_s']:.1f} s",
                     f"{270 / net['eval_last_s']:.1f}x faster than 270 s"))
    if ev:
        rows += [(f"(d) eval of {ev['nodes']} nodes, one thread, old (batch 1000)",
                  f"{ev['old_s']:.1f} s", f"{ev['images']} images"),
                 (f"(d) eval of {ev['nodes']} nodes, one thread, new (batch {ev['batch']})",
                  f"{ev['new_s']:.1f} s",
                  f"{ev['old_s'] / ev['new_s']:.2f}x faster, same accuracy: {ev['same_accuracy']}")]
    st = res.get("startup")
    if st:
        n = res["start_nodes"]
        for how in ("spawn", "fork"):
            d = st[how]
            rows.append((f"(s) {n} small-CNN nodes started by {how}: to the end of round 0",
                         f"{d['round0_done_s']:.1f} s",
                         f"summed PSS at its highest {d['max_sum_pss_gb']:.2f} GB, peak RSS "
                         f"{d['sum_peak_rss_gb']:.2f} GB"))
        f, s = st["fork"], st["spawn"]
        rows.append(("(s) fork / spawn", f"{f['round0_done_s'] / s['round0_done_s']:.2f}x time",
                     f"{f['max_sum_pss_gb'] / s['max_sum_pss_gb']:.2f}x PSS"))
    for m, d in res["process_mb"].items():
        rows.append((f"node process before data ({m})", f"{d['model']['VmRSS']} MB RSS",
                     f"anon {d['model']['RssAnon']} MB, torch import {d['torch']['VmRSS']} MB"))
    width = max(len(r[0]) for r in rows)
    print(f"\n{res['nodes']} nodes, {res['rounds']} rounds, {res['cores']} cores, load average "
          f"{res['loadavg_before'][0]:.1f} before, {res['loadavg_after'][0]:.1f} after")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>12}  {note}")
    if "networked_equals_inprocess" in res:
        print(f"  networked == in-process (every per-node loss, accuracy, byte count): "
              f"{res['networked_equals_inprocess']}")


if __name__ == "__main__":
    main()
