"""Frame splitting and the single writer."""

from __future__ import annotations

import os
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calico_vpp_driver.felix import felixbackend_pb2 as pb
from calico_vpp_driver.felix.wire import (
    MAX_FRAME,
    FrameDecoder,
    FrameWriter,
    FramingError,
    MessageDecoder,
    encode_frame,
    encode_message,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=12), st.data())
def test_any_split_yields_the_same_frames(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    dec = FrameDecoder()
    out = [frame for chunk in chunks for frame in dec.feed(chunk)]
    assert out == payloads
    assert dec.pending_bytes == 0


def test_truncated_stream_reports_pending_bytes() -> None:
    dec = FrameDecoder()
    assert list(dec.feed(encode_frame(b"abcdef")[:-2])) == []
    assert dec.pending_bytes == 12


def test_absurd_length_is_out_of_step() -> None:
    with pytest.raises(FramingError) as exc:
        list(FrameDecoder().feed(struct.pack("<Q", MAX_FRAME + 1)))
    assert exc.value.length == MAX_FRAME + 1


def test_message_decoder_tracks_last_good_sequence() -> None:
    dec = MessageDecoder()
    good = [pb.ToDataplane(sequence_number=i, in_sync=pb.InSync()) for i in range(3)]
    msgs = list(dec.feed(b"".join(encode_message(m) for m in good)))
    assert [m.sequence_number for m in msgs] == [0, 1, 2]
    with pytest.raises(FramingError) as exc:
        list(dec.feed(encode_frame(b"\xff\xff\xff")))
    assert exc.value.last_seq == 2 and exc.value.length == 3


def test_large_frame() -> None:
    members = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32" for i in range(200_000)]
    msg = pb.ToDataplane(sequence_number=1, ipset_update=pb.IPSetUpdate(id="s:big", members=members, type=2))
    stream = encode_message(msg)
    dec = MessageDecoder()
    got = [m for i in range(0, len(stream), 65536) for m in dec.feed(stream[i : i + 65536])]
    assert len(got) == 1 and len(got[0].ipset_update.members) == 200_000


def test_writer_never_interleaves_frames() -> None:
    r, w = os.pipe()
    writer = FrameWriter(w)
    big = pb.FromDataplane(process_status_update=pb.ProcessStatusUpdate(iso_timestamp="x" * 200_000))
    small = pb.FromDataplane(dataplane_in_sync=pb.DataplaneInSync())
    received = bytearray()

    def reader() -> None:
        while chunk := os.read(r, 65536):
            received.extend(chunk)

    t = threading.Thread(target=reader)
    t.start()
    threads = [
        threading.Thread(target=lambda m=m: [writer.send(m) for _ in range(20)]) for m in (big, small) * 3
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    os.close(w)
    t.join()
    os.close(r)
    dec = FrameDecoder()
    frames = [pb.FromDataplane.FromString(f) for f in dec.feed(bytes(received))]
    assert len(frames) == 120 and dec.pending_bytes == 0
    assert [f.sequence_number for f in frames] == list(range(120))
