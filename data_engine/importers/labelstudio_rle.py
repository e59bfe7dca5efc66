"""Label Studio's brush RLE (the rle-pack bit format of thi.ng/umbrella), written from its description.

The byte list is a big-endian bit stream:
  32 bits  number of values N (the RGBA image flattened: height * width * 4)
   5 bits  word size - 1 (bits per value; 8 for RGBA bytes)
 4x4 bits  the four run-length field sizes - 1
then chunks until N values are out:
   1 bit   1: a run of one repeated value, 0: a run of literal values
   2 bits  which of the four run-length field sizes follows
   k bits  run length - 1
  then one value (repeat) or run-length values (literal), each word-size bits.
The mask is the alpha channel (every 4th value) being non-zero.
"""

from __future__ import annotations

import numpy as np

RUN_FIELDS = (3, 4, 8, 16)  # the run-length field sizes the encoder here uses


class BitReader:
    """Reads unsigned big-endian integers of any bit width from bytes."""

    def __init__(self, data: bytes):
        self.bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))
        self.pos = 0

    def read(self, n: int) -> int:
        field = self.take(n)
        return int(field.dot(1 << np.arange(n - 1, -1, -1, dtype=np.int64))) if n else 0

    def read_words(self, count: int, size: int) -> np.ndarray:
        """`count` consecutive values of `size` bits each."""
        fields = self.take(count * size).reshape(count, size).astype(np.int64)
        return fields @ (1 << np.arange(size - 1, -1, -1, dtype=np.int64))

    def take(self, n: int) -> np.ndarray:
        if self.pos + n > len(self.bits):
            raise ValueError(f"stream ends after {len(self.bits)} bits, {self.pos + n} needed")
        field = self.bits[self.pos : self.pos + n]
        self.pos += n
        return field


def decode(data: list[int] | bytes, expected: int | None = None) -> np.ndarray:
    """Label Studio brush RLE -> the flat values it encodes (N = height * width * 4 for an RGBA image)."""
    stream = BitReader(bytes(data))
    total, word = stream.read(32), stream.read(5) + 1
    if expected is not None and total != expected:
        raise ValueError(f"it holds {total} values, {expected} expected")
    run_fields = [stream.read(4) + 1 for _ in range(4)]
    out = np.zeros(total, dtype=np.uint8 if word <= 8 else np.uint32)
    i = 0
    while i < total:
        repeat = stream.read(1)
        end = min(total, i + 1 + stream.read(run_fields[stream.read(2)]))
        out[i:end] = stream.read(word) if repeat else stream.read_words(end - i, word)
        i = end
    return out


def decode_mask(data, height: int, width: int) -> np.ndarray:
    """Brush RLE of a height x width RGBA canvas -> [height, width] bool mask (alpha > 0)."""
    values = decode(data, expected=height * width * 4)
    return values.reshape(height, width, 4)[:, :, 3] > 0


def encode(values: np.ndarray, word: int = 8) -> list[int]:
    """Flat values -> brush RLE bytes, using repeat runs only (valid for every decoder of the format)."""
    values = np.asarray(values, dtype=np.int64).ravel()
    bits = [bin_field(len(values), 32), bin_field(word - 1, 5)] + [bin_field(f - 1, 4) for f in RUN_FIELDS]
    for value, length in runs(values):
        while length > 0:
            take = min(length, 1 << RUN_FIELDS[-1])
            which = next(k for k, f in enumerate(RUN_FIELDS) if take - 1 < (1 << f))
            bits += ["1", bin_field(which, 2), bin_field(take - 1, RUN_FIELDS[which]), bin_field(value, word)]
            length -= take
    text = "".join(bits)
    text += "0" * (-len(text) % 8)
    return [int(text[k : k + 8], 2) for k in range(0, len(text), 8)]


def encode_mask(mask: np.ndarray) -> list[int]:
    """[H, W] bool mask -> brush RLE of an RGBA canvas with every channel 255 inside the mask."""
    return encode(np.repeat(np.asarray(mask, dtype=bool).ravel() * 255, 4))


def runs(values: np.ndarray):
    """(value, length) of each run of equal values."""
    if len(values) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    lengths = np.diff(np.r_[starts, len(values)])
    return list(zip(values[starts].tolist(), lengths.tolist()))


def bin_field(value: int, size: int) -> str:
    return format(value, f"0{size}b")
