# Ported from OpenSimplex noise by Kurt Spencer, released to the public domain
# (https://gist.github.com/KdotJPG/b1270127455a94ac5d19), as written in Python in
# the `opensimplex` package 0.4.5 (https://code.larus.se/lmas/opensimplex), whose
# permutation, gradients and region logic this file follows. That package's licence:
#
# MIT License
# Copyright (c) 2020 A. Svensson
#
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to deal
# in the Software without restriction, including without limitation the rights
# to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
# copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in all
# copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
# SOFTWARE.

"""OpenSimplex noise on tensors: the lattice algorithm, ported from ``opensimplex``.

We deliberately write our own port of OpenSimplex instead of calling the
``opensimplex`` package: that package evaluates one point at a time in
Python (a 3x256x256 field takes seconds) and runs on the CPU only, while
training needs a new noise box for every image of every batch, on the
images' device. :func:`noise2` and :func:`noise3` evaluate whole tensors of
coordinates at once (CPU or CUDA) and give the same values as
``opensimplex.OpenSimplex(seed).noise2 / noise3`` (to ~1e-15, in float64,
also for negative and large coordinates): same permutation from the seed,
same gradients, and the original region logic that picks which lattice
points contribute (a branch-free sum over all nearby lattice points differs
by ~5e-5 because the original skips some). The branches become small lookup
tables indexed by per-point comparison bits, so every point runs the same
tensor ops.

Public names: :func:`noise2`, :func:`noise3` (coordinates -> values, one
shape), :func:`check_seed`, :data:`DEFAULT_SEED`. Fractal noise and the
pseudo-anomalies built on it live in :mod:`rdtutorial.noise`.
"""

from __future__ import annotations

import torch

__all__ = ["noise2", "noise3", "check_seed", "DEFAULT_SEED"]

DEFAULT_SEED = 3
"""opensimplex's default seed, so ``noise3(x, y, z)`` == ``opensimplex.noise3``."""

_STRETCH2 = -0.211324865405187  # (1 / sqrt(2 + 1) - 1) / 2, as opensimplex rounds it
_SQUISH2 = 0.366025403784439  # (sqrt(2 + 1) - 1) / 2
_STRETCH3 = -1.0 / 6  # (1 / sqrt(3 + 1) - 1) / 3
_SQUISH3 = 1.0 / 3  # (sqrt(3 + 1) - 1) / 3
_NORM2 = 47.0
_NORM3 = 103.0

_GRADIENTS2 = (5, 2, 2, 5, -5, 2, -2, 5, 5, -2, 2, -5, -5, -2, -2, -5)
_GRADIENTS3 = (
    -11, 4, 4, -4, 11, 4, -4, 4, 11,
    11, 4, 4, 4, 11, 4, 4, 4, 11,
    -11, -4, 4, -4, -11, 4, -4, -4, 11,
    11, -4, 4, 4, -11, 4, 4, -4, 11,
    -11, 4, -4, -4, 11, -4, -4, 4, -11,
    11, 4, -4, 4, 11, -4, 4, 4, -11,
    -11, -4, -4, -4, -11, -4, -4, -4, -11,
    11, -4, -4, 4, -11, -4, 4, -4, -11,
)  # fmt: skip

_CHUNK = 1 << 19  # points per evaluation step: bounds the memory of the [N] temporaries


# --------------------------------------------------------------------------- permutation


def _wrap_int64(value: int) -> int:
    """Two's-complement wrap of a Python int to 64 bits (opensimplex's ``c_int64(x).value``)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _permutation(seed: int) -> list[int]:
    """opensimplex's 256-entry permutation for ``seed``: the same 64-bit LCG shuffle."""
    source = list(range(256))
    perm = [0] * 256
    state = seed
    for _ in range(3):
        state = _wrap_int64(state * 6364136223846793005 + 1442695040888963407)
    for i in range(255, -1, -1):
        state = _wrap_int64(state * 6364136223846793005 + 1442695040888963407)
        r = (state + 31) % (i + 1)  # Python's % is already non-negative here
        perm[i] = source[r]
        source[r] = source[i]
    return perm


_SPAN = 259  # lattice coordinates mod 256, shifted by the slot offsets -1..2: 0..258
_TABLES: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def check_seed(seed: int) -> None:
    """Raise ``TypeError`` unless ``seed`` is a Python int (opensimplex's 64-bit seeds)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be a Python int, got {seed!r} ({type(seed).__name__})")


def _tables(seed: int, dims: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(hash [259**dims] uint8, grads [dims, 256] float64) on ``device``, cached per (seed, dims, device).

    opensimplex hashes lattice point (X, Y, Z) to ``j = (perm[(perm[X & 255] + Y) & 255] + Z) & 255``
    and uses gradient ``GRADIENTS3[3 * (perm[j] % 24)]`` (2-D: ``j = (perm[X & 255] + Y) & 255``,
    ``GRADIENTS2[perm[j] & 0x0E]``). We tabulate ``j`` for every lattice point
    ``(X & 255) + o`` with o in -1..2 (row-major, index ``+ 1`` per axis), so a
    point's hash is one lookup instead of a chain of dependent ones (17 MB in 3-D).
    """
    check_seed(seed)
    key = (seed, dims, str(device))
    if key not in _TABLES:
        perm = torch.tensor(_permutation(seed), dtype=torch.int64, device=device)
        axis = torch.arange(-1, _SPAN - 1, device=device) & 0xFF  # [259] lattice coordinate mod 256
        axis_u8 = axis.to(torch.uint8)
        j = axis
        for _ in range(dims - 1):
            j = perm[j.long()].to(torch.uint8)[..., None] + axis_u8  # uint8 addition wraps mod 256
        if dims == 2:
            rows = [_GRADIENTS2[(p & 0x0E) : (p & 0x0E) + 2] for p in perm.tolist()]
        else:
            rows = [_GRADIENTS3[3 * (p % 24) : 3 * (p % 24) + 3] for p in perm.tolist()]
        grads = torch.tensor(rows, dtype=torch.float64, device=device).T.contiguous()
        _TABLES[key] = (j.reshape(-1).contiguous(), grads)
    return _TABLES[key]


# --------------------------------------------------------------------------- region tables
#
# For each input point, OpenSimplex sums the contributions of a handful of
# lattice points chosen by which region of the stretched unit cell the point
# falls into. We encode that choice as a small table: a per-point integer key
# selects the lattice offsets (relative to the cell origin) of its "slots",
# and a flag says whether each slot is used. The rules below transcribe
# opensimplex's branches (internals.py, _noise2/_noise3).


def _popcount(c: int) -> int:
    return bin(c).count("1")


def _extras3_low(c: int) -> list[tuple[int, int, int]]:
    """Two extra vertices in the tetrahedron at (0,0,0); ``c`` is the closest-vertex code."""
    if _popcount(c) == 1:  # (0,0,0) is one of the two closest vertices
        return {1: [(1, -1, 0), (1, 0, -1)], 2: [(-1, 1, 0), (0, 1, -1)], 4: [(-1, 0, 1), (0, -1, 1)]}[c]
    bits = [(c >> k) & 1 for k in range(3)]  # c = a | b
    return [tuple(bits), tuple(1 if bit else -1 for bit in bits)]


def _extras3_high(c: int) -> list[tuple[int, int, int]]:
    """Two extra vertices in the tetrahedron at (1,1,1); ``c`` is the closest-vertex code."""
    if _popcount(c) == 2:  # (1,1,1) is one of the two closest vertices
        return {3: [(2, 1, 0), (1, 2, 0)], 5: [(2, 0, 1), (1, 0, 2)], 6: [(0, 2, 1), (0, 1, 2)]}[c]
    bits = [(c >> k) & 1 for k in range(3)]  # c = a & b
    return [tuple(bits), tuple(2 * bit for bit in bits)]


def _minus_one_vertex(c: int) -> tuple[int, int, int]:
    """A permutation of (1,1,-1): -1 on the first axis that ``c`` does not contain."""
    return (-1, 1, 1) if not c & 1 else (1, -1, 1) if not c & 2 else (1, 1, -1)


def _two_vertex(c: int) -> tuple[int, int, int]:
    """A permutation of (2,0,0): 2 on the first axis that ``c`` contains."""
    return (2, 0, 0) if c & 1 else (0, 2, 0) if c & 2 else (0, 0, 2)


def _extras3_octahedron(a: int, b: int) -> list[tuple[int, int, int]]:
    """Two extra vertices in the octahedron; ``a``, ``b`` are the two closest-vertex codes.

    A code with two bits lies on the (1,1,1) side, one bit on the (0,0,0) side.
    """
    a_far, b_far = _popcount(a) == 2, _popcount(b) == 2
    if a_far and b_far:
        return [(1, 1, 1), _two_vertex(a & b)]
    if not a_far and not b_far:
        return [(0, 0, 0), _minus_one_vertex(a | b)]
    far, near = (a, b) if a_far else (b, a)
    return [_minus_one_vertex(far), _two_vertex(near)]


_CORNERS_LOW = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
_CORNERS_HIGH = [(1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)]
_CORNERS_OCTAHEDRON = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1)]


def _region_table3() -> tuple[list, list]:
    """Offsets [192][8][3] and used flags [192][8] for the 3-D keys.

    Key = region * 64 + code: region 0 (tetrahedron at the origin, code c),
    1 (tetrahedron at (1,1,1), code c), 2 (octahedron, code 8 * a + b).
    Slots 0-5 are cell corners, slots 6-7 the two extra vertices.
    """
    offsets = [[(0, 0, 0)] * 8 for _ in range(192)]
    used = [[False] * 8 for _ in range(192)]

    def fill(key: int, corners: list, extras: list) -> None:
        slots = corners + [(0, 0, 0)] * (6 - len(corners)) + extras
        offsets[key] = slots
        used[key] = [True] * len(corners) + [False] * (6 - len(corners)) + [True, True]

    for c in (1, 2, 4, 3, 5, 6):
        fill(c, _CORNERS_LOW, _extras3_low(c))
        fill(64 + c, _CORNERS_HIGH, _extras3_high(c))
    for a in (1, 3, 4, 6):
        for b in (1, 2, 5, 6):
            if a != b:
                fill(128 + 8 * a + b, _CORNERS_OCTAHEDRON, _extras3_octahedron(a, b))
    return offsets, used


def _region_table2() -> tuple[list, list]:
    """Offsets [8][4][2] and used flags [8][4] for the 2-D keys.

    Key = 4 * region + 2 * near + (xins > yins): region 0 is the triangle at
    (0,0), 1 the one at (1,1); ``near`` says whether that triangle's own
    corner is one of the two closest vertices. Slots: (1,0), (0,1), the
    triangle's corner, the extra vertex.
    """
    extras = {
        (0, 0): (1, 1), (0, 1): (1, 1), (0, 2): (-1, 1), (0, 3): (1, -1),
        (1, 0): (0, 0), (1, 1): (0, 0), (1, 2): (0, 2), (1, 3): (2, 0),
    }  # fmt: skip
    offsets = [[(1, 0), (0, 1), (region, region), extras[(region, case)]] for region in (0, 1) for case in range(4)]
    return offsets, [[True] * 4 for _ in range(8)]


_UNUSED_SHIFT = 64.0  # an unused slot sits this far away, so its attenuation is negative
_REGION_TABLES: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _region_tables(dims: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slot columns over the keys, on ``device``: shifts [S * D, K] float64, hash steps [S, K] int64.

    ``shift = offset + sum(offset) * squish`` is a slot's lattice offset in
    input space, so its displacement is ``d0 - shift``; unused slots get a far
    shift (zero contribution). The hash step is the offset as a row-major step
    in the 259**dims hash table. Column layout: one cheap 1-D gather per column.
    """
    key = (dims, str(device))
    if key not in _REGION_TABLES:
        offsets, used = _region_table3() if dims == 3 else _region_table2()
        squish = _SQUISH3 if dims == 3 else _SQUISH2
        off = torch.tensor(offsets, dtype=torch.int64)  # [K, S, D]
        shifts = off.double() + off.sum(-1, keepdim=True).double() * squish
        shifts[~torch.tensor(used)] = _UNUSED_SHIFT
        strides = torch.tensor([_SPAN ** (dims - 1 - a) for a in range(dims)])
        steps = (off * strides).sum(-1)  # [K, S]
        _REGION_TABLES[key] = (shifts.flatten(1).T.contiguous().to(device), steps.T.contiguous().to(device))
    return _REGION_TABLES[key]


# --------------------------------------------------------------------------- region keys
#
# Which region a point is in, and which extra vertices it uses, depends only
# on a few comparisons between its in-cell coordinates. We compute those
# comparisons as bits, pack them into an integer and look the key up in a
# table built from opensimplex's branches, evaluated once per bit pattern.


def _bits(code: int, count: int) -> list[bool]:
    return [bool((code >> i) & 1) for i in range(count)]


def _low_key(x_ge_y: bool, z_gt_y: bool, z_gt_x: bool, w_gt_x: bool, w_gt_y: bool, w_gt_z: bool, y_gt_z: bool) -> int:
    """Tetrahedron at (0,0,0): code of the closest vertex/vertices (``w = 1 - in_sum``)."""
    swap_b = x_ge_y and z_gt_y  # b (y) is replaced by z
    swap_a = not x_ge_y and z_gt_x  # a (x) is replaced by z
    a_point, b_point = (4 if swap_a else 1), (4 if swap_b else 2)
    w_gt_a = w_gt_z if swap_a else w_gt_x
    w_gt_b = w_gt_z if swap_b else w_gt_y
    b_gt_a = y_gt_z if swap_a else z_gt_x if swap_b else not x_ge_y
    if w_gt_a or w_gt_b:  # (0,0,0) is one of the two closest vertices
        return b_point if b_gt_a else a_point
    return a_point | b_point


def _high_key(x_le_y: bool, z_lt_y: bool, z_lt_x: bool, w_lt_x: bool, w_lt_y: bool, w_lt_z: bool, y_lt_z: bool) -> int:
    """Tetrahedron at (1,1,1): code of the closest vertex/vertices (``w = 3 - in_sum``)."""
    swap_b = x_le_y and z_lt_y
    swap_a = not x_le_y and z_lt_x
    a_point, b_point = (3 if swap_a else 6), (3 if swap_b else 5)
    w_lt_a = w_lt_z if swap_a else w_lt_x
    w_lt_b = w_lt_z if swap_b else w_lt_y
    b_lt_a = y_lt_z if swap_a else z_lt_x if swap_b else not x_le_y
    if w_lt_a or w_lt_b:  # (1,1,1) is one of the two closest vertices
        return b_point if b_lt_a else a_point
    return a_point & b_point


def _octahedron_key(p1_gt_1: bool, p2_gt_1: bool, p3_gt_1: bool, a_le_b: bool, a_lt_c: bool, b_lt_c: bool) -> int:
    """Octahedron: ``8 * a + b`` for the two closest-vertex codes (scores a, b, c = |p1-1|, |p2-1|, |p3-1|)."""
    a_point = 3 if p1_gt_1 else 4
    b_point = 5 if p2_gt_1 else 2
    third = 6 if p3_gt_1 else 1
    if a_le_b and a_lt_c:
        a_point = third
    elif not a_le_b and b_lt_c:
        b_point = third
    return 8 * a_point + b_point


_KEY_LUT3 = (
    [_low_key(*_bits(i, 7)) for i in range(128)]
    + [64 + _high_key(*_bits(i, 7)) for i in range(128)]
    + [128 + _octahedron_key(*_bits(i, 6)) for i in range(64)]
)
_KEY_LUTS: dict[str, torch.Tensor] = {}


def _pack(bits: list[torch.Tensor]) -> torch.Tensor:
    """Bool tensors [N] -> int32 [N] with bit i set where ``bits[i]``."""
    code = bits[0].to(torch.int32)
    for i, bit in enumerate(bits[1:], 1):
        code |= bit.to(torch.int32) << i
    return code


def _keys3(xins: torch.Tensor, yins: torch.Tensor, zins: torch.Tensor) -> torch.Tensor:
    """3-D region key [N] int64 (see :func:`_region_table3`), from opensimplex's branch conditions."""
    device = str(xins.device)
    if device not in _KEY_LUTS:
        _KEY_LUTS[device] = torch.tensor(_KEY_LUT3, dtype=torch.int64, device=xins.device)
    x, y, z = xins, yins, zins
    in_sum = x + y + z
    w = 1 - in_sum
    low = _pack([x >= y, z > y, z > x, w > x, w > y, w > z, y > z])
    w = 3 - in_sum
    high = _pack([x <= y, z < y, z < x, w < x, w < y, w < z, y < z])
    p1, p2, p3 = x + y, x + z, y + z
    a, b, c = (p1 - 1).abs(), (p2 - 1).abs(), (p3 - 1).abs()  # == 1 - p when p <= 1, exactly
    mid = _pack([p1 > 1, p2 > 1, p3 > 1, a <= b, a < c, b < c])
    index = torch.where(in_sum <= 1, low, torch.where(in_sum >= 2, high + 128, mid + 256))
    return _KEY_LUTS[device].index_select(0, index)


def _keys2(xins: torch.Tensor, yins: torch.Tensor) -> torch.Tensor:
    """2-D region key [N] int64 (see :func:`_region_table2`), opensimplex's branch conditions."""
    in_sum = xins + yins
    high = in_sum > 1
    zins = torch.where(high, 2 - in_sum, 1 - in_sum)
    near = torch.where(high, (zins < xins) | (zins < yins), (zins > xins) | (zins > yins))
    return 4 * high.long() + 2 * near.long() + (xins > yins).long()


# --------------------------------------------------------------------------- evaluation


def _evaluate(coords: list[torch.Tensor], seed: int) -> torch.Tensor:
    """OpenSimplex value [N] float64 for flat float64 coordinates ``coords`` (D tensors [N])."""
    dims = len(coords)
    stretch, squish, norm = (_STRETCH3, _SQUISH3, _NORM3) if dims == 3 else (_STRETCH2, _SQUISH2, _NORM2)
    lattice_hash, grads = _tables(seed, dims, coords[0].device)
    shifts, steps = _region_tables(dims, coords[0].device)

    stretch_offset = sum(coords[1:], coords[0]) * stretch
    stretched = [c + stretch_offset for c in coords]
    cell = [torch.floor(s) for s in stretched]
    squish_offset = sum(cell[1:], cell[0]) * squish
    inside = [s - b for s, b in zip(stretched, cell)]
    d0 = [c - (b + squish_offset) for c, b in zip(coords, cell)]  # displacement from the cell origin, D x [N]
    base = sum(((b.long() & 0xFF) + 1) * _SPAN ** (dims - 1 - a) for a, b in enumerate(cell))  # [N] hash index

    key = _keys3(*inside) if dims == 3 else _keys2(*inside)
    value = torch.zeros_like(coords[0])
    for slot in range(steps.shape[0]):
        d = [d0[a] - shifts[slot * dims + a].index_select(0, key) for a in range(dims)]  # D x [N]
        j = lattice_hash.index_select(0, base + steps[slot].index_select(0, key)).int()  # [N] hash
        attn = d[0] * d[0]
        extrapolation = grads[0].index_select(0, j) * d[0]
        for a in range(1, dims):
            attn.addcmul_(d[a], d[a])
            extrapolation.addcmul_(grads[a].index_select(0, j), d[a])
        attn = attn.neg_().add_(2).clamp_(min=0).square_().square_()  # (2 - |d|^2)^4 where positive
        value.addcmul_(attn, extrapolation)
    return value / norm


def _noise(coords: tuple[torch.Tensor, ...], seed: int) -> torch.Tensor:
    """Broadcast, validate and evaluate in chunks; returns float64 of the broadcast shape."""
    tensors = [torch.as_tensor(c) for c in coords]
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"noise coordinates must be on one device, got {sorted(map(str, devices))}")
    tensors = [t.to(torch.float64) for t in torch.broadcast_tensors(*tensors)]
    shape = tensors[0].shape
    flat = [t.reshape(-1) for t in tensors]
    for name, t in zip("xyz", flat):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"noise coordinate {name} contains NaN or infinite values")
        if t.numel() and float(t.abs().max()) >= 2.0**52:
            raise ValueError(f"noise coordinate {name} has |value| >= 2**52: float64 cannot place it on the lattice")
    check_seed(seed)
    out = torch.empty(flat[0].numel(), dtype=torch.float64, device=flat[0].device)
    for start in range(0, out.numel(), _CHUNK):
        out[start : start + _CHUNK] = _evaluate([t[start : start + _CHUNK] for t in flat], seed)
    return out.reshape(shape)


def noise2(x: torch.Tensor, y: torch.Tensor, seed: int = DEFAULT_SEED) -> torch.Tensor:
    """2-D OpenSimplex noise at every point: equals ``opensimplex.OpenSimplex(seed).noise2(x, y)`` elementwise.

    ``x``, ``y``: tensors (or numbers) of one shape, or broadcastable, on one
    device (CPU or CUDA). Returns float64 of that shape, values in about [-1, 1].
    """
    return _noise((x, y), seed)


def noise3(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, seed: int = DEFAULT_SEED) -> torch.Tensor:
    """3-D OpenSimplex noise at every point: equals ``opensimplex.OpenSimplex(seed).noise3(x, y, z)`` elementwise.

    ``x``, ``y``, ``z``: tensors (or numbers) of one shape, or broadcastable,
    on one device (CPU or CUDA). Returns float64 of that shape, values in about [-1, 1].
    """
    return _noise((x, y, z), seed)
