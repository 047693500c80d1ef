#!/usr/bin/env python3
"""The dashboard's event hub under load: what a record costs the collector, with and without
clients (stuck or reading), how many updates a client gets per second, and how many bytes the
page receives for a whole run.

    python3 benchmarks/dashboard_stream.py --nodes 20 --rounds 300 --repeats 5

Records have the shape of real mcepl records (each node with `--degree` neighbours in
peer_bytes). Reported: medians over the repeats, measured side by side in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time

from mcepl.launcher.dashboard.hub import EventHub
from mcepl.launcher.dashboard.runinfo import RunInfo


def make_records(nodes: int, rounds: int, degree: int) -> list[dict]:
    out = []
    for k in range(rounds + 1):
        for i in range(nodes):
            peers = " ".join(f"{(i + d) % nodes}:data:6037:6037:24" for d in range(1, degree + 1))
            out.append({
                "round": k, "node": i, "bytes_sent": 6037 * degree,
                "bytes_received": 6037 * degree, "msgs_sent": degree, "msgs_received": degree,
                "bytes_sent_control": 0, "bytes_received_control": 0, "control_bytes": 0,
                "bytes_arrived_data": 6037 * degree, "bytes_sent_metrics": 812,
                "mask_entries": 46608 * degree, "mask_bytes": 5826 * degree,
                "bits_per_entry": 1.0, "peer_bytes": peers, "encode_s": 0.0001,
                "decode_s": 0.0007, "compute_s": 0.028, "comm_s": 0.004, "train_loss": 0.61,
                "density": 0.3, "dropped": 0, "t_end": 1.7e9 + k,
                **({"test_acc": 0.7, "eval_s": 0.01} if k % 25 == 0 else {})})
    return out


def info(nodes: int, rounds: int) -> RunInfo:
    return RunInfo("bench", "", "mcepl", "small-cnn", "fashion-mnist", "raw", rounds, 25,
                   [{"id": i, "r": 0.3, "labels": [0, 1, 2, 3], "degree": 2}
                    for i in range(nodes)], [[i, (i + 1) % nodes] for i in range(nodes)], "")


def feed(records: list[dict], nodes: int, rounds: int, stuck: int, readers: int) -> float:
    """Seconds per record for the producer, with `stuck` clients that never read and
    `readers` clients polling every interval in another thread."""
    hub = EventHub([info(nodes, rounds)], interval_s=0.05)
    subs = [hub.subscribe() for _ in range(stuck)]
    stop = threading.Event()

    def read() -> None:
        mine = [hub.subscribe() for _ in range(readers)]
        while not stop.is_set():
            for s in mine:
                upd = hub.poll(s)
                if upd is not None:
                    json.dumps(upd)  # what the stream does with it
            stop.wait(hub.interval_s)

    t = threading.Thread(target=read)
    if readers:
        t.start()
    t0 = time.perf_counter()
    for r in records:
        hub.add_record(0, r)
    dt = time.perf_counter() - t0
    stop.set()
    if readers:
        t.join()
    del subs
    return dt / len(records)


def updates_per_s(records: list[dict], nodes: int, rounds: int, seconds: float) -> float:
    """Updates one client gets per second while records arrive as fast as they are made."""
    hub = EventHub([info(nodes, rounds * 1000)])

    def produce() -> None:
        t0, k = time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            r = dict(records[k % len(records)])
            r["round"] = k // nodes
            r["node"] = k % nodes
            hub.add_record(0, r)
            k += 1
        hub.close()

    async def consume() -> int:
        n = 0
        async for chunk in hub.stream():
            n += chunk.startswith("event: update")
        return n

    threading.Thread(target=produce).start()
    t0 = time.monotonic()
    n = asyncio.run(consume())
    return n / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--degree", type=int, default=9)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stuck", type=int, default=50)
    ap.add_argument("--readers", type=int, default=5)
    args = ap.parse_args()
    recs = make_records(args.nodes, args.rounds, args.degree)
    jsonl = sum(len(json.dumps(r, sort_keys=True)) + 1 for r in recs)
    cases = {"no client": (0, 0), f"{args.stuck} stuck clients": (args.stuck, 0),
             f"{args.readers} reading clients": (0, args.readers)}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):  # interleaved, so load changes hit every case alike
        for name, (stuck, readers) in cases.items():
            times[name].append(feed(recs, args.nodes, args.rounds, stuck, readers))
    base = statistics.median(times["no client"])
    print(f"{len(recs)} records ({args.nodes} nodes x {args.rounds + 1} rounds, degree "
          f"{args.degree}); medians of {args.repeats}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  add_record with {name:>18}: {m * 1e6:7.2f} us per record "
              f"({m / base:.2f}x no client)")
    hub = EventHub([info(args.nodes, args.rounds)])
    for r in recs:
        hub.add_record(0, r)
    snap = len(json.dumps(hub.snapshot(), separators=(",", ":")))
    print(f"  whole run as the page receives it: {snap / 1e6:.2f} MB "
          f"(metrics.jsonl: {jsonl / 1e6:.2f} MB)")
    ups = updates_per_s(recs, args.nodes, args.rounds, 3.0)
    print(f"  updates per second to one client while records arrive flat out: {ups:.1f} "
          f"(interval {hub.interval_s} s)")


if __name__ == "__main__":
    main()
