"""Counter-based pseudo-random masks built from ONNX integer ops, and their numpy twin.

Every mask element is a pure function of ``(seed, pass index, site index, element index)``:

    site_key  = mix(mix(seed_lo + mix(seed_hi + 0x3C6EF372)) + (site + 1) * 0x9E3779B9)
    key1[t]   = mix(site_key + mix(t))
    key2[t]   = mix(key1[t] + 0x632BE5AB)
    bits[t,i] = mix(mix(i + key1[t]) + key2[t])
    u[t,i]    = (bits[t,i] // 256) * 2**-24                    # uniform in [0, 1), 24 bits

where ``mix`` is a 32-bit finaliser using only unsigned add, multiply and divide-by-power-of-two
(``x += x // 2**16; x *= 0x7FEB352D; x += x // 2**15; x *= 0x846CA68B; x += x // 2**16``, all mod 2**32).
ONNX Runtime's CUDA execution provider implements Add, Mul and Div for uint32, so nothing falls back
to the CPU, and integer arithmetic makes the bits identical on every device. (CUDA has no kernels
for BitShift or Bitwise*, hence add and divide instead of xor and shift.)
"""

from __future__ import annotations

import numpy as np

from export.builder import GraphBuilder

MIX_STEPS = ((65536, 0x7FEB352D), (32768, 0x846CA68B), (65536, None))
SEED_SALT = 0x3C6EF372
SITE_STEP = 0x9E3779B9
KEY2_SALT = 0x632BE5AB
NORMAL_SALT = 0x5BD1E995
UNIFORM_BITS = 24


def mix_np(x: np.ndarray) -> np.ndarray:
    """The 32-bit mixer on a uint32 array (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint32).copy()
    for divisor, multiplier in MIX_STEPS:
        x += x // np.uint32(divisor)
        if multiplier is not None:
            x *= np.uint32(multiplier)
    return x


def site_key_np(seed: int, site: int) -> np.ndarray:
    lo = np.array([seed % 2**32], dtype=np.uint32)
    hi = np.array([seed // 2**32], dtype=np.uint32)
    inner = mix_np(lo + mix_np(hi + np.uint32(SEED_SALT)))
    return mix_np(inner + np.uint32(((site + 1) * SITE_STEP) % 2**32))


def uniform_np(seed: int, site: int, passes: np.ndarray, size: int) -> np.ndarray:
    """Uniform numbers ``u[t, i]`` in [0, 1), float32 ``[len(passes), size]``."""
    key1 = mix_np(site_key_np(seed, site) + mix_np(np.asarray(passes, dtype=np.uint32)))
    key2 = mix_np(key1 + np.uint32(KEY2_SALT))
    index = np.arange(size, dtype=np.uint32)[None, :]
    bits = mix_np(mix_np(index + key1[:, None]) + key2[:, None])
    return _to_unit(bits)


def _to_unit(bits: np.ndarray) -> np.ndarray:
    top = (bits // np.uint32(2 ** (32 - UNIFORM_BITS))).astype(np.float32)
    return top * np.float32(2.0**-UNIFORM_BITS)


def normal_np(seed: int, site: int, passes: np.ndarray, size: int) -> np.ndarray:
    """Standard normal numbers by Box-Muller from two uniform streams, float32 ``[T, size]``."""
    key1 = mix_np(site_key_np(seed, site) + mix_np(np.asarray(passes, dtype=np.uint32)))
    key2 = mix_np(key1 + np.uint32(KEY2_SALT))
    index = np.arange(size, dtype=np.uint32)[None, :]
    bits = mix_np(mix_np(index + key1[:, None]) + key2[:, None])
    u1 = _to_unit(bits) + np.float32(2.0**-UNIFORM_BITS)
    u2 = _to_unit(mix_np(bits + np.uint32(NORMAL_SALT)))
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)


class HashOps:
    """Builds the mixer and uniform streams as ONNX nodes with a :class:`GraphBuilder`."""

    def __init__(self, b: GraphBuilder) -> None:
        self.b = b
        self._consts: dict[int, str] = {}

    def u32(self, value: int) -> str:
        if value not in self._consts:
            self._consts[value] = self.b.const(np.uint32(value % 2**32), np.uint32, hint="u32")
        return self._consts[value]

    def mix(self, x: str) -> str:
        b = self.b
        for divisor, multiplier in MIX_STEPS:
            x = b.op("Add", x, b.op("Div", x, self.u32(divisor)))
            if multiplier is not None:
                x = b.op("Mul", x, self.u32(multiplier))
        return x

    def seed_words(self, seed: str) -> tuple[str, str]:
        """Split an int64 scalar seed (>= 0) into uint32 low and high words, each shape [1]."""
        b = self.b
        seed1 = b.op("Reshape", seed, b.const([1], np.int64))
        two32 = b.const([2**32], np.int64)
        hi = b.op("Div", seed1, two32)
        lo = b.op("Sub", seed1, b.op("Mul", hi, two32))
        return b.op("Cast", lo, to=12), b.op("Cast", hi, to=12)  # 12 = UINT32

    def site_key(self, lo: str, hi: str, site: int) -> str:
        b = self.b
        inner = self.mix(b.op("Add", lo, self.mix(b.op("Add", hi, self.u32(SEED_SALT)))))
        return self.mix(b.op("Add", inner, self.u32((site + 1) * SITE_STEP)))

    def bits(self, site_key: str, passes_u32: str, size: int) -> str:
        """uint32 ``[T, size]`` random bits for the passes in ``passes_u32`` (uint32 ``[T]``)."""
        b = self.b
        key1 = self.mix(b.op("Add", site_key, self.mix(passes_u32)))
        key2 = self.mix(b.op("Add", key1, self.u32(KEY2_SALT)))
        axis1 = b.const([1], np.int64)
        key1 = b.op("Unsqueeze", key1, axis1)
        key2 = b.op("Unsqueeze", key2, axis1)
        index = b.op(
            "Cast",
            b.op("Range", b.const(0, np.int64), b.const(size, np.int64), b.const(1, np.int64)),
            to=12,
        )
        index = b.op("Unsqueeze", index, b.const([0], np.int64))
        return self.mix(b.op("Add", self.mix(b.op("Add", index, key1)), key2))

    def unit(self, bits: str) -> str:
        """float32 uniform in [0, 1) from the top 24 bits."""
        b = self.b
        top = b.op("Cast", b.op("Div", bits, self.u32(2 ** (32 - UNIFORM_BITS))), to=1)
        return b.op("Mul", top, b.const(2.0**-UNIFORM_BITS, np.float32))

    def normal(self, bits: str) -> str:
        """float32 standard normal by Box-Muller (matches :func:`normal_np`)."""
        b = self.b
        u1 = b.op("Add", self.unit(bits), b.const(2.0**-UNIFORM_BITS, np.float32))
        u2 = self.unit(self.mix(b.op("Add", bits, self.u32(NORMAL_SALT))))
        radius = b.op("Sqrt", b.op("Mul", b.op("Log", u1), b.const(-2.0, np.float32)))
        angle = b.op("Mul", u2, b.const(2.0 * np.pi, np.float32))
        return b.op("Mul", radius, b.op("Cos", angle))
