"""Check the reported bytes against a packet capture: a small network on loopback under tcpdump.

Runs `mcepl launch` (real node processes over TCP on 127.0.0.1) while tcpdump captures the
network's ports on `lo`, then, for every TCP connection and direction, compares the TCP payload
bytes in the capture with what mcepl reported plus ZeroMQ's own framing (ZMTP 3), computed
exactly from the reports:

    captured = greeting (64 B) + READY command (its properties: Socket-Type, and Identity for
               DEALER/ROUTER sockets) + sum over messages of (our frame bytes + per frame a
               flags byte and a 1-byte length, or 8-byte length for frames over 255 bytes)

Connections: node i's DEALER -> node j's ROUTER carries i's data and handshake hello to j one way
and j's handshake ack the other way (records' `peer_bytes`: kinds data/control at i, ack at j);
the run is plaintext (`--insecure`) so the capture can be parsed: CURVE would encrypt it;
node i's PUSH -> collector's PULL carries i's metrics records (each states its own size,
`bytes_sent_metrics`) and its bye (the collector's `collector.json`) one way and only the greeting
and READY the other. Connections are attributed by parsing the captured streams (the DEALER's
READY names its identity, "<node id>-<hex>"; the first metrics message names its sender); the
capture is reassembled by TCP sequence number, so a retransmission would not be double
counted (their bytes are reported separately).

Needs root (or CAP_NET_RAW) and tcpdump (`apt-get install -y tcpdump`).

    python benchmarks/tcpdump_bytes.py --nodes 4 --rounds 5 --codec delta --out runs/tcpdump
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

import mcepl.launcher.launch as launch_mod
from mcepl.config import load_config
from mcepl.launcher.collector import Collector
from mcepl.launcher.report import read_metrics
from mcepl.launcher.resolve import free_base_port
from mcepl.protocol import parse_peer_bytes
from mcepl.protocol.accounting import ZMTP_GREETING, zmtp_frame_header, zmtp_ready
from mcepl.topology import generate

# ----------------------------------------------------------------------------- pcap reading


@dataclass
class Flow:
    """One direction of one TCP connection."""

    segments: dict[int, bytes] = field(default_factory=dict)  # relative seq -> payload
    isn: int | None = None
    raw_payload: int = 0  # every payload byte seen, retransmissions included
    packets: int = 0

    def stream(self) -> bytes:
        out = bytearray()
        for seq in sorted(self.segments):
            data = self.segments[seq]
            if seq < len(out):  # overlap (retransmission): keep what we have
                data = data[len(out) - seq:]
            elif seq > len(out):
                raise ValueError(f"capture has a hole at relative seq {len(out)}..{seq}")
            out += data
        return bytes(out)


def read_pcap(path: Path) -> dict[tuple[int, int], Flow]:
    """(src port, dst port) -> Flow, for IPv4 TCP on an Ethernet-framed capture (Linux lo)."""
    blob = path.read_bytes()
    magic = blob[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<",
              b"\xa1\xb2\x3c\x4d": ">"}.get(magic)
    if endian is None:
        raise ValueError(f"{path}: not a pcap file")
    linktype = struct.unpack(endian + "I", blob[20:24])[0]
    if linktype != 1:
        raise ValueError(f"{path}: link type {linktype}, expected Ethernet (1)")
    flows: dict[tuple[int, int], Flow] = defaultdict(Flow)
    pos = 24
    while pos + 16 <= len(blob):
        incl = struct.unpack(endian + "I", blob[pos + 8:pos + 12])[0]
        pkt = blob[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        if len(pkt) < 14 + 20 or pkt[12:14] != b"\x08\x00" or pkt[14 + 9] != 6:
            continue
        ip = pkt[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        tcp = ip[ihl:]
        sport, dport, seq = struct.unpack("!HHI", tcp[:8])
        off = (tcp[12] >> 4) * 4
        flags = tcp[13]
        payload = tcp[off:total - ihl]
        f = flows[(sport, dport)]
        if flags & 0x02:  # SYN
            f.isn = seq
        if not payload:
            continue
        if f.isn is None:
            raise ValueError(f"flow {sport}->{dport}: data before its SYN was captured")
        f.packets += 1
        f.raw_payload += len(payload)
        rel = (seq - f.isn - 1) % 2**32
        if len(payload) > len(f.segments.get(rel, b"")):
            f.segments[rel] = payload
    return flows


# ----------------------------------------------------------------------------- ZMTP parsing

def zmtp_parse(stream: bytes) -> dict[str, Any]:
    """Greeting, commands and message frames of one direction of a ZMTP 3 stream."""
    if len(stream) < ZMTP_GREETING or stream[0] != 0xFF or stream[9] != 0x7F:
        raise ValueError("stream does not start with a ZMTP 3 greeting")
    pos, commands, frames, props = ZMTP_GREETING, [], [], {}
    while pos < len(stream):
        flags = stream[pos]
        if flags & 0x02:
            size = struct.unpack("!Q", stream[pos + 1:pos + 9])[0]
            head = 9
        else:
            size, head = stream[pos + 1], 2
        body = stream[pos + head:pos + head + size]
        if len(body) != size:
            raise ValueError("stream ends inside a frame")
        if flags & 0x04:
            name = body[1:1 + body[0]].decode()
            commands.append((name, head + size))
            if name == "READY":
                p = 1 + body[0]
                while p < len(body):
                    n = body[p]
                    key = body[p + 1:p + 1 + n].decode()
                    vlen = struct.unpack("!I", body[p + 1 + n:p + 5 + n])[0]
                    props[key] = body[p + 5 + n:p + 5 + n + vlen]
                    p += 5 + n + vlen
        else:
            frames.append((flags, body))
        pos += head + size
    return {"commands": commands, "frames": frames, "props": props}


def first_message_sender(frames: list[tuple[int, bytes]]) -> int | None:
    for _, body in frames:
        try:
            return int(msgpack.unpackb(body, raw=False)["src"])
        except Exception:  # noqa: BLE001 - not a header frame
            continue
    return None


# ----------------------------------------------------------------------------- reported side

def reported(run_dir: Path) -> tuple[dict[tuple[int, int, str], list[int]], dict[int, dict]]:
    """(i, j, kind) -> [bytes sent by i to j, framing]; node -> metrics connection numbers."""
    per_link: dict[tuple[int, int, str], list[int]] = defaultdict(lambda: [0, 0])
    metrics: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in read_metrics(run_dir):
        i = r["node"]
        for (j, kind), (sent, _, framing) in parse_peer_bytes(r.get("peer_bytes", "")).items():
            per_link[i, j, kind][0] += sent
            per_link[i, j, kind][1] += framing
        m = r["bytes_sent_metrics"]
        metrics[i]["bytes"] += m
        metrics[i]["framing"] += zmtp_frame_header(m)
        metrics[i]["msgs"] += 1
    col = json.loads((run_dir / "collector.json").read_text())["received"]
    for i, c in col.items():
        metrics[int(i)]["bye"] = c["bye"]
        metrics[int(i)]["collector_metrics"] = c["metrics"]
    return per_link, metrics


# ----------------------------------------------------------------------------- main

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--codec", default="delta", choices=["raw", "entropy", "delta"])
    ap.add_argument("--model", default="small-cnn")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--timeout", type=float, default=300, help="seconds for the whole capture")
    ap.add_argument("--out", default="runs/tcpdump")
    args = ap.parse_args()

    if not shutil.which("tcpdump"):
        print("tcpdump not found (apt-get install -y tcpdump)", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg = load_config(None).with_overrides(
        run={"rounds": args.rounds, "eval_every": args.rounds, "codec": args.codec},
        model={"name": args.model}, data={"root": args.data_dir})
    base = free_base_port(args.nodes, start=27000)
    topo = generate("er", args.nodes, p=0.7, seed=1, base_port=base)
    node_ports = {base + i: i for i in range(args.nodes)}
    cport = free_port()
    # the launcher binds its collector on a random port; pin it so the capture filter names it
    launch_mod.Collector = lambda run_dir, run_id, n, **kw: Collector(  # type: ignore[assignment]
        run_dir, run_id, n, bind=f"tcp://127.0.0.1:{cport}", **kw)

    pcap = out / "capture.pcap"
    flt = f"tcp and (portrange {base}-{base + args.nodes - 1} or port {cport})"
    dump = subprocess.Popen(["timeout", str(int(args.timeout)), "tcpdump", "-i", "lo", "-U",
                             "-s", "0", "-w", str(pcap), flt],
                            stderr=subprocess.PIPE, text=True)
    assert dump.stderr is not None
    line = dump.stderr.readline()  # "listening on lo ..." once the capture runs
    if "listening" not in line:
        print(f"tcpdump did not start: {line}", file=sys.stderr)
        return 2
    print(f"capturing on lo: {flt}", flush=True)
    try:
        res = launch_mod.launch(cfg, topo, out / "run", quiet=True, secure=False)
    finally:
        time.sleep(1.0)  # let the last segments and FINs be written
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=30)
    print(f"run: {res.summary['status']}, {res.wall_s:.1f} s; capture: {pcap.stat().st_size:,} B")

    flows = read_pcap(pcap)
    per_link, metrics = reported(out / "run")
    rows = []
    for (sport, dport), f in flows.items():
        if dport not in node_ports and dport != cport:
            continue  # the server->client direction is handled with its client->server flow
        if not f.segments:
            continue  # a connect attempt refused before the peer had bound (no payload)
        fwd, back = f, flows.get((dport, sport), Flow())
        fz = zmtp_parse(fwd.stream())
        nback = len(zmtp_parse(back.stream())["frames"]) if back.segments else 0
        if dport in node_ports:
            j = node_ports[dport]
            identity = fz["props"]["Identity"]
            i = int(identity.split(b"-")[0])
            data, control = per_link[i, j, "data"], per_link[i, j, "control"]
            ack = per_link[j, i, "ack"]
            exp_fwd = (ZMTP_GREETING + zmtp_ready("DEALER", identity) + data[0] + data[1]
                       + control[0] + control[1])
            exp_back = ZMTP_GREETING + zmtp_ready("ROUTER", b"") + ack[0] + ack[1]
            rows.append((f"node {i} DEALER -> node {j} ROUTER", i, j, data[0] + control[0],
                         ack[0], exp_fwd, exp_back, fwd, back, (len(fz["frames"]), nback)))
        else:
            i = first_message_sender(fz["frames"])
            m = metrics[i]
            ours = m["bytes"] + m["bye"]
            exp_fwd = (ZMTP_GREETING + zmtp_ready("PUSH") + ours + m["framing"]
                       + zmtp_frame_header(m["bye"]))
            exp_back = ZMTP_GREETING + zmtp_ready("PULL")
            rows.append((f"node {i} PUSH -> collector PULL", i, -1, ours, 0, exp_fwd, exp_back,
                         fwd, back, (len(fz["frames"]), nback)))
    rows.sort(key=lambda r: (r[2] == -1, r[1], r[2]))
    print("\n| connection | reported bytes (ours) fwd / back | expected on the wire fwd / back |"
          " captured TCP payload fwd / back | diff | ours / captured |")
    print("|---|---|---|---|---|---|")
    worst, table = 0.0, []
    for name, _, _, ours_f, ours_b, exp_f, exp_b, fwd, back, nframes in rows:
        cap_f, cap_b = len(fwd.stream()), len(back.stream()) if back.segments else 0
        diff = (cap_f + cap_b) - (exp_f + exp_b)
        ratio = (ours_f + ours_b) / (cap_f + cap_b)
        worst = max(worst, abs(diff) / (cap_f + cap_b))
        print(f"| {name} | {ours_f:,} / {ours_b:,} | {exp_f:,} / {exp_b:,} | {cap_f:,} / "
              f"{cap_b:,} | {diff:+d} | {ratio:.4f} |")
        table.append({"connection": name, "reported_fwd": ours_f, "reported_back": ours_b,
                      "expected_fwd": exp_f, "expected_back": exp_b, "captured_fwd": cap_f,
                      "captured_back": cap_b, "retransmitted": fwd.raw_payload - cap_f
                      + back.raw_payload - cap_b, "zmtp_frames_fwd_back": nframes})
    links = sum(1 for r in rows if r[2] != -1)
    print(f"\n{links} node links + {len(rows) - links} collector connections; largest "
          f"|captured - expected| / captured = {100 * worst:.4f}%; retransmitted payload bytes: "
          f"{sum(t['retransmitted'] for t in table)}")
    (out / "tcpdump_bytes.json").write_text(json.dumps(
        {"codec": args.codec, "nodes": args.nodes, "rounds": args.rounds,
         "connections": table, "max_relative_error": worst}, indent=2))
    ok = worst <= 0.01 and len(rows) == 2 * len(topo.edges) + args.nodes
    print("OK: within 1%" if ok else "MISMATCH", f"(details: {out / 'tcpdump_bytes.json'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
