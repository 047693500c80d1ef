"""The one exception a decoder may raise.

Receivers decode bytes from the network, so a bad message must never crash a node: it is dropped and
counted. A single exception type with a short machine-readable `reason` lets the node count drops
per cause without parsing messages, and lets tests assert *why* something was refused.
"""

from __future__ import annotations

# Known reasons, kept short and stable so they can be used as metric/counter keys.
REASONS: frozenset[str] = frozenset({
    "garbage",    # header frame is not one msgpack map (or decoding blew up in an unexpected way)
    "truncated",  # no frames, or a tensor frame shorter than declared
    "frames",     # wrong number of frames, or a frame that is not a byte buffer
    "length",     # a tensor frame longer than declared
    "oversize",   # a size limit was exceeded (message, header, tensors, entries, keys, strings)
    "schema",     # wrong keys, wrong types, bad values, unknown dtype/codec/message type
    "shape",      # declared byte length disagrees with what the codec needs for the shape
    "padding",    # bit-packed mask with nonzero padding bits
    "version",    # different wire format version
    "run_id",     # message belongs to another run
    "reference",  # delta-coded tensor whose reference mask this receiver lacks or holds otherwise
})


class ProtocolError(Exception):
    """A message was refused; `reason` is one of REASONS, the message says what exactly."""

    def __init__(self, reason: str, message: str = "") -> None:
        self.reason = reason if reason in REASONS else "garbage"
        self.detail = message or reason
        super().__init__(f"{self.reason}: {self.detail}")
