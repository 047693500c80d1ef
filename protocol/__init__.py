"""The wire format: message envelope, mask bit-packing, tensor codecs, defensive decoding."""

from .bitpack import pack_mask, packed_nbytes, unpack_mask
from .codecs import (
    DTYPE_NAMES,
    DTYPES_BY_NAME,
    Codec,
    codec_for,
    codec_names,
    get_codec,
    register_codec,
)
from .errors import REASONS, ProtocolError
from .message import (
    CONTROL_SCHEMAS,
    DEFAULT_LIMITS,
    FORMAT_VERSION,
    ControlMessage,
    DataMessage,
    Limits,
    Message,
    decode_message,
    decode_payload,
    encode_control,
    encode_payload,
    message_size,
)
from .payload import WIRE_DTYPES, Payload

__all__ = [
    "CONTROL_SCHEMAS",
    "DEFAULT_LIMITS",
    "DTYPES_BY_NAME",
    "DTYPE_NAMES",
    "FORMAT_VERSION",
    "REASONS",
    "WIRE_DTYPES",
    "Codec",
    "ControlMessage",
    "DataMessage",
    "Limits",
    "Message",
    "Payload",
    "ProtocolError",
    "codec_for",
    "codec_names",
    "decode_message",
    "decode_payload",
    "encode_control",
    "encode_payload",
    "get_codec",
    "message_size",
    "pack_mask",
    "packed_nbytes",
    "register_codec",
    "unpack_mask",
]
