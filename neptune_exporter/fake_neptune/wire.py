"""Protobuf wire encoding with numpy: float-series responses straight to bytes (no per-point Python objects)."""

from __future__ import annotations

import struct

import numpy as np

_COMPLETION_RATIO_ONE = np.frombuffer(b"\x2d" + struct.pack("<f", 1.0), dtype=np.uint8)


def varint(value: int) -> bytes:
    """Protobuf varint of a non-negative int (negative ints as 64-bit two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    return varint(field_number << 3 | 2) + varint(len(payload)) + payload


def _varint_lengths(unsigned: np.ndarray) -> np.ndarray:
    lengths = np.ones(unsigned.size, dtype=np.int64)
    for group in range(1, 10):
        lengths += (unsigned >> np.uint64(7 * group)) != 0
    return lengths


def _points_matrix(unsigned: np.ndarray, steps: np.ndarray, values: np.ndarray, width: int) -> np.ndarray:
    """Rows of `ProtoFloatPointValueDTO` records (tag 0x12 + length + fields) whose timestamp varint is `width`."""
    n = unsigned.size
    rows = np.empty((n, width + 26), dtype=np.uint8)
    rows[:, 0] = 0x12
    rows[:, 1] = width + 24
    rows[:, 2] = 0x08
    for group in range(width):
        byte = (unsigned >> np.uint64(7 * group)) & np.uint64(0x7F)
        rows[:, 3 + group] = byte | np.uint64(0x80) if group < width - 1 else byte
    at = 3 + width
    rows[:, at] = 0x11
    rows[:, at + 1 : at + 9] = steps.astype("<f8").view(np.uint8).reshape(n, 8)
    rows[:, at + 9] = 0x19
    rows[:, at + 10 : at + 18] = values.astype("<f8").view(np.uint8).reshape(n, 8)
    rows[:, at + 18 : at + 23] = _COMPLETION_RATIO_ONE
    return rows


def encode_float_points(timestamps_ms: np.ndarray, steps: np.ndarray, values: np.ndarray) -> bytes:
    """Repeated field 2 (`values`) of ProtoFloatSeriesValuesDTO for the given points."""
    n = int(np.asarray(steps).size)
    if n == 0:
        return b""
    unsigned = np.ascontiguousarray(timestamps_ms, dtype=np.int64).view(np.uint64)
    steps = np.ascontiguousarray(steps, dtype=np.float64)
    values = np.ascontiguousarray(values, dtype=np.float64)
    lengths = _varint_lengths(unsigned)
    widths = np.unique(lengths)
    if widths.size == 1:
        return _points_matrix(unsigned, steps, values, int(widths[0])).tobytes()
    sizes = lengths + 26
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    for width in widths:
        idx = np.nonzero(lengths == width)[0]
        rows = _points_matrix(unsigned[idx], steps[idx], values[idx], int(width))
        out[offsets[idx][:, None] + np.arange(int(width) + 26)] = rows
    return out.tobytes()


def encode_float_series_entry(request_id: str, points: bytes) -> bytes:
    """One `series` entry (field 1) of ProtoFloatSeriesValuesResponseDTO."""
    single = length_delimited(1, request_id.encode()) + length_delimited(2, points)
    return length_delimited(1, single)
