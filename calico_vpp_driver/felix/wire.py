"""Felix's frame format: an 8-byte little-endian length, then one protobuf envelope.

`FrameDecoder` turns whatever bytes arrive (any split) into whole frames;
`FrameWriter` is the single writer of a connection's outbound side, so a frame
is never interleaved with another or left half-written (a malformed frame
makes Felix restart). A frame that does not parse means the stream is out of
step; `FramingError` carries what an operator needs to see (the last good
sequence number and the frame's length).
"""

from __future__ import annotations

import errno
import os
import select
import struct
import threading
from collections.abc import Iterator

from google.protobuf.message import DecodeError

from . import felixbackend_pb2 as pb

_LEN = struct.Struct("<Q")
HEADER_SIZE = _LEN.size

# No frame Felix sends comes near this (a full 1M-member IP set is ~40 MB);
# a length above it means the stream is out of step, not a big message.
MAX_FRAME = 1 << 30


class FramingError(Exception):
    """The byte stream is out of step; the only safe reaction is to exit."""

    def __init__(self, reason: str, *, last_seq: int | None, length: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.last_seq = last_seq
        self.length = length


def encode_frame(payload: bytes | memoryview) -> bytes:
    return _LEN.pack(len(payload)) + payload


def encode_message(msg: pb.ToDataplane | pb.FromDataplane) -> bytes:
    return encode_frame(msg.SerializeToString())


class FrameDecoder:
    """Incremental splitter of a byte stream into frame payloads.

    Payloads are yielded as memoryviews into the bytes received (no copy per
    frame); bytes of an incomplete frame are kept as a list of chunks and
    joined once, when the frame is complete, so a 20 MB frame arriving in
    1 MiB reads is copied once, not twenty times.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._have = 0  # bytes held in _parts
        self._need = 0  # bytes _parts must reach before parsing is worth trying

    def feed(self, data: bytes) -> Iterator[memoryview]:
        """Add bytes; yield every frame payload now complete, in order."""
        if self._parts:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._need:
                return
            data = b"".join(self._parts)
            self._parts = []
            self._have = 0
        view = memoryview(data)
        pos = 0
        end = len(data)
        need = 0
        while end - pos >= HEADER_SIZE:
            (length,) = _LEN.unpack_from(data, pos)
            if length > MAX_FRAME:
                raise FramingError(f"frame length {length} exceeds {MAX_FRAME}", last_seq=None, length=length)
            start = pos + HEADER_SIZE
            if end - start < length:
                need = HEADER_SIZE + length
                break
            pos = start + length
            yield view[start:pos]
        if pos < end:
            rest = data[pos:]
            self._parts = [rest]
            self._have = len(rest)
            self._need = need or HEADER_SIZE

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame held back (non-zero at EOF = truncated)."""
        return self._have


class MessageDecoder:
    """Frames -> ToDataplane messages, tracking the last good sequence number."""

    def __init__(self) -> None:
        self.frames = FrameDecoder()
        self.last_seq: int | None = None
        self.count = 0

    def feed(self, data: bytes) -> Iterator[pb.ToDataplane]:
        for frame in self.frames.feed(data):
            msg = pb.ToDataplane()
            try:
                msg.ParseFromString(frame)  # type: ignore[arg-type]  # upb takes any buffer
            except DecodeError as exc:
                raise FramingError(
                    f"frame does not parse as ToDataplane: {exc}",
                    last_seq=self.last_seq,
                    length=len(frame),
                ) from None
            self.last_seq = msg.sequence_number
            self.count += 1
            yield msg


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte, waiting out a full pipe or socket buffer.

    Works whether or not the descriptor is non-blocking (a socket shared with
    a non-blocking reader is). Raises OSError (e.g. BrokenPipeError) if the
    peer is gone.
    """
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        except InterruptedError:
            continue
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                select.select([], [fd], [])
                continue
            raise
        view = view[n:]


class FrameWriter:
    """The only writer of FromDataplane frames on one connection.

    Thread-safe: each frame is encoded before the lock is taken and written
    whole under it. Sequence numbers count up from 0 per connection.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._seq = 0
        self.closed = False

    def send(self, msg: pb.FromDataplane) -> None:
        with self._lock:
            if self.closed:
                raise BrokenPipeError("connection to Felix is closed")
            msg.sequence_number = self._seq
            data = encode_message(msg)
            try:
                write_all(self._fd, data)
            except OSError:
                self.closed = True
                raise
            self._seq += 1
