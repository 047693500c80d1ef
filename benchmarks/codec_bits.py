"""Mask codecs on real masks: bits per entry against H(r), bytes per round against dsgd, and time.

Trains MCE-PL in-process on real Fashion-MNIST with one node per retention ratio r (0.1 ... 0.5 by
default), records every intermediate mask each node sends, then encodes each node's sequence of
masks with every codec exactly as the round loop does (encode_payload / decode_message, the delta
codec with one CodecState per direction of a link) and reports:

- bits per mask entry of each codec (mask frames only) against the binary entropy H(r) of the
  actual ones-fraction; delta also over the second half of the run, once masks have settled;
- bytes of one mcepl message (header included) per codec against one dsgd message (the same
  model's float32 parameters), i.e. the per-round, per-neighbour ratio;
- encode + decode time of one whole mask message per codec against the median compute time of
  a training round of the same run.

    python benchmarks/codec_bits.py --rounds 200 --out runs/codec-bits
    python benchmarks/codec_bits.py --model alexnet --rounds 20 --out runs/codec-bits-alexnet
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import mcepl.node.inprocess as inprocess
import mcepl.node.links as links
from mcepl.config import load_config
from mcepl.node.factory import build_algorithm, node_shard
from mcepl.protocol import (
    CodecState,
    Payload,
    binary_entropy,
    decode_message,
    encode_payload,
    mask_wire_stats,
    message_size,
)
from mcepl.topology import generate

CODECS = ("raw", "entropy", "delta")
RUN = "codec-bits"


def record_masks(cfg, topo) -> tuple[dict[int, list[tuple[int, Payload]]], list[dict[str, Any]]]:
    """Train in-process; return what each node sent, per round (one copy per round), and the
    run's per-node records."""
    sent: dict[int, list[tuple[int, Payload]]] = defaultdict(list)
    real = links.encode_payload  # PeerLinks encodes for both drivers

    def spy(payload: Payload, **kw: Any) -> list[bytes]:
        node, rnd = kw["sender"], kw["round"]
        if payload.kind == "mask" and (not sent[node] or sent[node][-1][0] != rnd):
            sent[node].append((rnd, Payload(payload.kind, {k: v.clone() for k, v in
                                                           payload.tensors.items()})))
        return real(payload, **kw)

    links.encode_payload = spy
    try:
        result = inprocess.run_inprocess(cfg, topo)
    finally:
        links.encode_payload = real
    return sent, result.records


def measure(seq: list[tuple[int, Payload]], codec: str) -> dict[str, Any]:
    """Encode and decode one link's sequence of mask messages with `codec`."""
    tx, rx = CodecState(), CodecState()
    rows = []
    for rnd, payload in seq:
        t0 = time.perf_counter()
        frames = encode_payload(payload, run_id=RUN, round=rnd, phase=0, sender=0,
                                mask_codec=codec, state=tx)
        t1 = time.perf_counter()
        msg = decode_message(frames, run_id=RUN, state=rx)
        t2 = time.perf_counter()
        assert msg.payload.equal(payload), f"{codec} is not lossless at round {rnd}"
        entries, nbytes = mask_wire_stats(payload, frames)
        ones = sum(int(t.sum()) for t in payload.tensors.values())
        rows.append({"round": rnd, "entries": entries, "mask_bytes": nbytes, "ones": ones,
                     "message": message_size(frames), "enc_s": t1 - t0, "dec_s": t2 - t1})
    return {"rows": rows, "key_frames": tx.key_frames, "delta_frames": tx.delta_frames}


def bpe(rows: list[dict[str, Any]]) -> float:
    return 8 * sum(r["mask_bytes"] for r in rows) / sum(r["entries"] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--model", default="small-cnn")
    ap.add_argument("--retention", default="0.1,0.2,0.3,0.4,0.5",
                    help="one node per value (comma-separated)")
    ap.add_argument("--data-dir", default=None, help="Fashion-MNIST directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/codec-bits")
    args = ap.parse_args()

    retention = [float(x) for x in args.retention.split(",")]
    cfg = load_config(None).with_overrides(
        run={"rounds": args.rounds, "eval_every": args.rounds, "seed": args.seed},
        model={"name": args.model}, data={"root": args.data_dir}, algorithm={"name": "mcepl"})
    topo = generate("ring", len(retention), retention=retention, base_port=26000)
    print(f"training mcepl ({args.model}, {len(retention)} nodes r={retention}, ring, "
          f"{args.rounds} rounds) and recording the masks ...", flush=True)
    t0 = time.perf_counter()
    sent, records = record_masks(cfg, topo)
    print(f"  trained in {time.perf_counter() - t0:.0f} s", flush=True)
    compute = statistics.median(r["compute_s"] for r in records if r["round"] >= 1)
    nodes_per_round = len(retention)  # the in-process compute_s is per node and round

    # dsgd's message: the same model's float32 parameters, encoded as the round loop would
    dcfg = cfg.with_overrides(algorithm={"name": "dsgd"})
    dsgd = build_algorithm(dcfg, topo, 0, node_shard(dcfg, topo, 0))
    dsgd_payload = next(iter(dsgd.outgoing(1, 0).values()))
    dsgd_msg = message_size(encode_payload(dsgd_payload, run_id=RUN, round=1, phase=0, sender=0))
    dsgd_floats = sum(t.numel() for t in dsgd_payload.tensors.values())

    results: dict[str, Any] = {"model": args.model, "rounds": args.rounds,
                               "compute_s_per_round_median": compute,
                               "dsgd_message_bytes": dsgd_msg, "dsgd_floats": dsgd_floats,
                               "nodes": {}}
    print(f"\nmasks: {sent[0][0][1].entries()['mask_entries']:,} entries per message; dsgd "
          f"message: {dsgd_msg:,} bytes ({dsgd_floats:,} float32)\n")
    print("| r (ones fraction) | H(r) | raw | entropy | delta (all rounds) | delta (2nd half) |"
          " delta key/delta frames |")
    print("|---|---|---|---|---|---|---|")
    timing: dict[str, list[float]] = defaultdict(list)
    msg_bytes: dict[str, list[int]] = defaultdict(list)
    for node, r in enumerate(retention):
        seq = sent[node]
        res = {c: measure(seq, c) for c in CODECS}
        rows = res["raw"]["rows"]
        frac = sum(x["ones"] for x in rows) / sum(x["entries"] for x in rows)
        half = [x for x in res["delta"]["rows"] if x["round"] > args.rounds // 2]
        entry = {"retention": r, "ones_fraction": frac, "H": binary_entropy(frac),
                 **{f"bpe_{c}": bpe(res[c]["rows"]) for c in CODECS},
                 "bpe_delta_second_half": bpe(half) if half else None,
                 "delta_key_frames": res["delta"]["key_frames"],
                 "delta_delta_frames": res["delta"]["delta_frames"]}
        for c in CODECS:
            for x in res[c]["rows"]:
                if x["round"] >= 1:
                    timing[c].append(x["enc_s"] + x["dec_s"])
                    msg_bytes[c].append(x["message"])
            entry[f"message_bytes_{c}"] = statistics.fmean(
                x["message"] for x in res[c]["rows"] if x["round"] >= 1)
        results["nodes"][str(node)] = entry
        print(f"| {r} ({frac:.4f}) | {entry['H']:.4f} | {entry['bpe_raw']:.4f} | "
              f"{entry['bpe_entropy']:.4f} | {entry['bpe_delta']:.4f} | "
              f"{entry['bpe_delta_second_half'] or float('nan'):.4f} | "
              f"{entry['delta_key_frames']}/{entry['delta_delta_frames']} |")

    print("\n| codec | mean mcepl message (B) | dsgd message (B) | dsgd / mcepl | "
          "encode+decode per message (ms, median) | round compute per node (ms, median) |")
    print("|---|---|---|---|---|---|")
    results["codecs"] = {}
    for c in CODECS:
        mean_msg = statistics.fmean(msg_bytes[c])
        t = statistics.median(timing[c])
        results["codecs"][c] = {"mean_message_bytes": mean_msg, "dsgd_ratio": dsgd_msg / mean_msg,
                                "encode_decode_s_median": t}
        print(f"| {c} | {mean_msg:,.0f} | {dsgd_msg:,} | {dsgd_msg / mean_msg:.1f}x | "
              f"{1e3 * t:.2f} | {1e3 * compute:.1f} |")
    print(f"\n(compute per node and round; {nodes_per_round} nodes, so a round of the whole "
          f"in-process network computes for about {1e3 * compute * nodes_per_round:.0f} ms)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "codec_bits.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out / 'codec_bits.json'}")


if __name__ == "__main__":
    main()
