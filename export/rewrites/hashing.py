"""Counter-based pseudo-random masks built from ONNX integer ops, and their numpy twin.

Every mask element is a pure function of ``(seed, pass index, site index, element index)``, drawn with
Widynski's "Squares" counter-based generator (arXiv:2004.06278), which needs only unsigned 64-bit
multiply, add and a 32-bit rotation (``x // 2**32 + x * 2**32``, the two halves do not overlap):

    squares32(ctr, key): x = y = ctr * key; z = y + key
                         x = rot(x*x + y); x = rot(x*x + z); x = rot(x*x + y)
                         return (x*x + z) // 2**32                      # all mod 2**64
    key64(ctr, key)    = odd(squares32(ctr, key) * 2**32 + squares32(ctr + 2**63, key))
    seed_key           = key64(seed, SEED_KEY)
    site_key[k]        = key64(k, seed_key)
    bits[t, i]         = squares32(t * 2**32 + i, site_key[k])
    u[t, i]            = (bits[t, i] // 256) * 2**-24                  # uniform in [0, 1), 24 bits

Gaussian sites draw their second Box-Muller uniform with ``key64(NORMAL_STREAM, site_key[k])``.
ONNX Runtime's CUDA execution provider implements Add, Mul and Div for uint64 and uint32, so nothing
falls back to the CPU, and integer arithmetic makes the bits identical on every device. (CUDA has no
kernels for BitShift or Bitwise*, hence multiply and divide instead of shifts, and no xor.)

An earlier generator replaced the xors of a multiply-xorshift finaliser by additions; that made it
nearly linear in its counter, and the masks of different passes were strongly correlated.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from export.rewrites.builder import GraphBuilder

SEED_KEY = 0xC8E4FD154CE32F6D
NORMAL_STREAM = 0x9E3779B97F4A7C15
TWO32 = 2**32
TWO63 = 2**63
UNIFORM_BITS = 24


def _rot32(x: np.ndarray) -> np.ndarray:
    return x // np.uint64(TWO32) + x * np.uint64(TWO32)


def squares32_np(ctr: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Squares: uint32 output for uint64 counters and keys (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        ctr = np.asarray(ctr, dtype=np.uint64)
        x = ctr * np.asarray(key, dtype=np.uint64)
        y = x
        z = y + np.asarray(key, dtype=np.uint64)
        x = _rot32(x * x + y)
        x = _rot32(x * x + z)
        x = _rot32(x * x + y)
        return ((x * x + z) // np.uint64(TWO32)).astype(np.uint32)


def key64_np(ctr: int | np.ndarray, key: int | np.ndarray) -> np.ndarray:
    """An odd 64-bit key from two Squares outputs, shape [1]."""
    ctr = np.array([ctr], dtype=np.uint64).reshape(1)
    with np.errstate(over="ignore"):
        hi = squares32_np(ctr, key).astype(np.uint64)
        lo = squares32_np(ctr + np.uint64(TWO63), key).astype(np.uint64)
        full = hi * np.uint64(TWO32) + lo
        return full // np.uint64(2) * np.uint64(2) + np.uint64(1)


def site_key_np(seed: int, site: int) -> np.ndarray:
    return key64_np(site, key64_np(seed, SEED_KEY))


def _bits_np(key: np.ndarray, passes: np.ndarray, size: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        ctr = (np.asarray(passes).astype(np.uint32).astype(np.uint64)[:, None] * np.uint64(TWO32)
               + np.arange(size, dtype=np.uint64)[None, :])
    return squares32_np(ctr, key)


def uniform_np(seed: int, site: int, passes: np.ndarray, size: int) -> np.ndarray:
    """Uniform numbers ``u[t, i]`` in [0, 1), float32 ``[len(passes), size]``."""
    return _to_unit(_bits_np(site_key_np(seed, site), passes, size))


def _to_unit(bits: np.ndarray) -> np.ndarray:
    top = (bits // np.uint32(2 ** (32 - UNIFORM_BITS))).astype(np.float32)
    return top * np.float32(2.0**-UNIFORM_BITS)


def normal_np(seed: int, site: int, passes: np.ndarray, size: int) -> np.ndarray:
    """Standard normal numbers by Box-Muller from two uniform streams, float32 ``[T, size]``."""
    key = site_key_np(seed, site)
    u1 = _to_unit(_bits_np(key, passes, size)) + np.float32(2.0**-UNIFORM_BITS)
    u2 = _to_unit(_bits_np(key64_np(NORMAL_STREAM, key), passes, size))
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)


class HashOps:
    """Builds the Squares generator and uniform streams as ONNX nodes with a :class:`GraphBuilder`."""

    def __init__(self, b: GraphBuilder) -> None:
        self.b = b
        self._consts: dict[tuple[int, type], str] = {}

    def const(self, value: int, dtype: type = np.uint64) -> str:
        if (value, dtype) not in self._consts:
            self._consts[(value, dtype)] = self.b.const(dtype(value), dtype, hint="u")
        return self._consts[(value, dtype)]

    def squares32(self, ctr: str, key: str) -> str:
        """uint64 counters and key -> Squares output (< 2**32), still as uint64."""
        b = self.b

        def rot(x: str) -> str:
            return b.op("Add", b.op("Div", x, self.const(TWO32)), b.op("Mul", x, self.const(TWO32)))

        def square_plus(x: str, c: str) -> str:
            return b.op("Add", b.op("Mul", x, x), c)

        y = b.op("Mul", ctr, key)
        z = b.op("Add", y, key)
        x = rot(square_plus(y, y))
        x = rot(square_plus(x, z))
        x = rot(square_plus(x, y))
        return b.op("Div", square_plus(x, z), self.const(TWO32))

    def key64(self, ctr: str, key: str) -> str:
        """Odd uint64 key [1] (see module docstring)."""
        b = self.b
        hi = self.squares32(ctr, key)
        lo = self.squares32(b.op("Add", ctr, self.const(TWO63)), key)
        full = b.op("Add", b.op("Mul", hi, self.const(TWO32)), lo)
        return b.op("Add", b.op("Mul", b.op("Div", full, self.const(2)), self.const(2)),
                    self.const(1))

    def seed_key(self, seed: str) -> str:
        """uint64 [1] key of an int64 scalar seed (>= 0)."""
        b = self.b
        seed1 = b.op("Cast", b.op("Reshape", seed, b.const([1], np.int64)), to=TensorProto.UINT64)
        return self.key64(seed1, self.const(SEED_KEY))

    def site_key(self, seed_key: str, site: int) -> str:
        return self.key64(self.b.const([site], np.uint64), seed_key)

    def bits(self, site_key: str, passes_u32: str, size: int) -> str:
        """uint32 ``[T, size]`` random bits for the passes in ``passes_u32`` (uint32 ``[T]``)."""
        b = self.b
        passes = b.op("Cast", passes_u32, to=TensorProto.UINT64)
        rows = b.op("Unsqueeze", b.op("Mul", passes, self.const(TWO32)), b.const([1], np.int64))
        index = b.op(
            "Cast",
            b.op("Range", b.const(0, np.int64), b.const(size, np.int64), b.const(1, np.int64)),
            to=TensorProto.UINT64,
        )
        index = b.op("Unsqueeze", index, b.const([0], np.int64))
        bits = self.squares32(b.op("Add", rows, index), site_key)
        return b.op("Cast", bits, to=TensorProto.UINT32)

    def unit(self, bits: str) -> str:
        """float32 uniform in [0, 1) from the top 24 bits."""
        b = self.b
        top = b.op("Cast", b.op("Div", bits, self.const(2 ** (32 - UNIFORM_BITS), np.uint32)),
                   to=TensorProto.FLOAT)
        return b.op("Mul", top, b.const(2.0**-UNIFORM_BITS, np.float32))

    def normal(self, site_key: str, passes_u32: str, size: int) -> str:
        """float32 standard normal ``[T, size]`` by Box-Muller (matches :func:`normal_np`)."""
        b = self.b
        u1 = b.op("Add", self.unit(self.bits(site_key, passes_u32, size)),
                  b.const(2.0**-UNIFORM_BITS, np.float32))
        second = self.key64(self.const(NORMAL_STREAM), site_key)
        u2 = self.unit(self.bits(second, passes_u32, size))
        radius = b.op("Sqrt", b.op("Mul", b.op("Log", u1), b.const(-2.0, np.float32)))
        angle = b.op("Mul", u2, b.const(2.0 * np.pi, np.float32))
        return b.op("Mul", radius, b.op("Cos", angle))
