"""What CURVE (encryption and authentication, the default) costs against plaintext (--insecure).

Two measurements, each side by side in one run (secure and plaintext alternate, so load changes
on a shared machine hit both alike), reported as medians and the ratio secure / plaintext:

1. transport: one DEALER -> ROUTER link over TCP loopback, as between two nodes; the ROUTER
   answers every message with a 60-byte ack. Round-trip time per message for messages of the
   sizes mcepl really sends (encoded here from the models on Fashion-MNIST's 1x28x28 input): an
   MCE-PL mask message of the small CNN and of AlexNet, and a dsgd message of the small CNN
   (float32 weights).
2. whole runs: `launch()` of the same config and graph, secure and `secure=False` in turn;
   time per round = the time between the last node finishing round r-1 and round r (from the
   records' `t_end`), median over rounds 1..R, then the median over repeats.

    python benchmarks/curve_cost.py                      # both parts, defaults below
    python benchmarks/curve_cost.py --skip-runs --messages 5000
    python benchmarks/curve_cost.py --nodes 6 --rounds 30 --repeats 3 --out runs/curve
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import zmq

import mcepl.node.plugins  # noqa: F401 - fills the registries the config validates against
from mcepl.config import load_config
from mcepl.launcher.launch import launch
from mcepl.launcher.report import read_metrics
from mcepl.launcher.resolve import default_topology
from mcepl.node.transport import make_curve_client, make_curve_server, start_authenticator

RUN_ID = "run-0123456789ab"  # as long as a real one (default_run_id)


def message_sizes() -> dict[str, int]:
    """Bytes of the messages a node sends per neighbour and round, encoded for real."""
    import torch

    from mcepl.node.models import MaskedModel, build_model
    from mcepl.protocol import Payload, encode_payload, message_size

    out = {}
    for model in ("small-cnn", "alexnet"):
        m = MaskedModel(build_model(model, (1, 28, 28), 10, seed=0))
        masks = {n: torch.zeros(m.w[n].shape, dtype=torch.bool) for n in m.names}
        out[f"mcepl {model} mask"] = message_size(encode_payload(
            Payload("mask", masks), run_id=RUN_ID, round=1, phase=0, sender=0))
        if model == "small-cnn":
            weights = {n: p.detach().clone() for n, p in m.module.named_parameters()}
            out[f"dsgd {model} weights"] = message_size(encode_payload(
                Payload("weights", weights), run_id=RUN_ID, round=1, phase=0, sender=0))
    return out


def _pair(secure: bool) -> tuple[zmq.Context, zmq.Socket, zmq.Socket, object]:
    ctx = zmq.Context()
    auth = None
    router = ctx.socket(zmq.ROUTER)
    dealer = ctx.socket(zmq.DEALER)
    if secure:
        spub, ssec = (k.decode() for k in zmq.curve_keypair())
        cpub, csec = (k.decode() for k in zmq.curve_keypair())
        auth = start_authenticator(ctx, "bench", {1: cpub}, Counter(), threading.Lock())
        make_curve_server(router, spub, ssec)
        make_curve_client(dealer, spub, cpub, csec)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.setsockopt(zmq.ROUTING_ID, b"1-bench")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    return ctx, router, dealer, auth


def round_trips(secure: bool, size: int, n: int) -> list[float]:
    """Seconds per message: DEALER sends `size` bytes (2 frames), ROUTER replies 60 bytes."""
    ctx, router, dealer, auth = _pair(secure)
    header, body, ack = os.urandom(200), os.urandom(max(0, size - 200)), os.urandom(60)
    out = []
    try:
        for k in range(n + 20):  # the first 20 warm the connection up (handshake included)
            t0 = time.perf_counter()
            dealer.send_multipart([header, body])
            rid, *_ = router.recv_multipart()
            router.send_multipart([rid, ack])
            dealer.recv()
            if k >= 20:
                out.append(time.perf_counter() - t0)
    finally:
        dealer.close(0)
        router.close(0)
        if auth is not None:
            auth.stop()  # type: ignore[attr-defined]
        ctx.term()
    return out


def transport_part(messages: int, blocks: int) -> list[dict]:
    rows = []
    for name, size in message_sizes().items():
        got: dict[bool, list[float]] = {True: [], False: []}
        for b in range(blocks):  # alternate, so both see the same load
            for secure in ((True, False) if b % 2 == 0 else (False, True)):
                got[secure] += round_trips(secure, size, messages // blocks)
        s, p = statistics.median(got[True]), statistics.median(got[False])
        rows.append({"message": name, "bytes": size, "secure_us": s * 1e6, "plain_us": p * 1e6,
                     "ratio": s / p, "samples": len(got[True])})
        print(f"| {name} | {size:,} | {p * 1e6:.0f} | {s * 1e6:.0f} | {s / p:.2f} |", flush=True)
    return rows


def round_seconds(run_dir: Path) -> list[float]:
    ends: dict[int, float] = {}
    for r in read_metrics(run_dir):
        ends[r["round"]] = max(ends.get(r["round"], 0.0), float(r["t_end"]))
    return [ends[k] - ends[k - 1] for k in sorted(ends) if k >= 1 and k - 1 in ends]


def runs_part(args: argparse.Namespace, out: Path) -> dict:
    cfg = load_config(args.config).with_overrides(
        run={"rounds": args.rounds, "eval_every": args.rounds}, model={"name": args.model},
        algorithm={"name": args.algorithm}, data={"root": args.data_dir})
    topo = default_topology(cfg, args.nodes)
    per: dict[bool, list[float]] = {True: [], False: []}
    comm: dict[bool, list[float]] = {True: [], False: []}
    accs: dict[bool, set] = {True: set(), False: set()}
    for k in range(args.repeats):
        for secure in ((True, False) if k % 2 == 0 else (False, True)):
            d = out / f"{'secure' if secure else 'plain'}-{k}"
            res = launch(cfg, topo, d, quiet=True, secure=secure, auto_ports=True)
            per[secure].append(statistics.median(round_seconds(d)))
            comm[secure].append(statistics.median(
                [r["comm_s"] for r in read_metrics(d) if r["round"] >= 1]))
            accs[secure].add(res.summary["final_mean_acc"])
            print(f"  {'secure' if secure else 'plain '} run {k}: median round "
                  f"{per[secure][-1] * 1000:.1f} ms, comm_s {comm[secure][-1] * 1000:.2f} ms",
                  flush=True)
    s, p = statistics.median(per[True]), statistics.median(per[False])
    cs, cp = statistics.median(comm[True]), statistics.median(comm[False])
    return {"nodes": args.nodes, "rounds": args.rounds, "model": args.model,
            "algorithm": args.algorithm, "repeats": args.repeats,
            "secure_round_ms": s * 1000, "plain_round_ms": p * 1000, "ratio": s / p,
            "secure_comm_ms": cs * 1000, "plain_comm_ms": cp * 1000,
            "same_final_accuracy": accs[True] == accs[False] and len(accs[True]) == 1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000, help="round trips per message size "
                                                               "and mode (default 2000)")
    ap.add_argument("--blocks", type=int, default=4, help="alternating blocks (default 4)")
    ap.add_argument("--skip-runs", action="store_true", help="transport part only")
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="small-cnn")
    ap.add_argument("--algorithm", default="mcepl")
    ap.add_argument("--config", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="runs/curve-cost")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on "
          f"{os.cpu_count()} cores\n")
    print("| message | bytes | plaintext round trip (us, median) | CURVE (us, median) | ratio |")
    print("|---|---|---|---|---|")
    result: dict = {"load_at_start": load, "transport": transport_part(args.messages,
                                                                       args.blocks)}
    if not args.skip_runs:
        print(f"\nwhole runs: {args.nodes} nodes, {args.rounds} rounds, {args.model}, "
              f"{args.algorithm}, {args.repeats} repeats each, alternating", flush=True)
        r = runs_part(args, out)
        result["runs"] = r
        print(f"\n| run | plaintext (ms/round, median) | CURVE (ms/round, median) | ratio |\n"
              f"|---|---|---|---|\n| {args.nodes} nodes, {args.model}, {args.algorithm} | "
              f"{r['plain_round_ms']:.1f} | {r['secure_round_ms']:.1f} | {r['ratio']:.3f} |")
        print(f"comm_s per node and round (median): plaintext {r['plain_comm_ms']:.2f} ms, "
              f"CURVE {r['secure_comm_ms']:.2f} ms; same final accuracy: "
              f"{r['same_final_accuracy']}")
    result["load_at_end"] = os.getloadavg()
    (out / "curve_cost.json").write_text(json.dumps(result, indent=2))
    print(f"\nload average at end: {result['load_at_end'][0]:.1f}; details: "
          f"{out / 'curve_cost.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
