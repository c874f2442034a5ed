"""Two process settings that make CPU training faster without changing a number.

- :func:`flush_denormals`: subnormal floats are flushed to zero.
- :func:`keep_freed_memory`: memory that a step frees stays in the process
  for the next step instead of going back to the operating system.
- :func:`fast_cpu`: both; :func:`rdtutorial.train.train` runs under it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform

import torch

# mallopt(3) parameters and the values we set and restore (bytes; an int each).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_KEEP = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 2**31 - 1, _M_TOP_PAD: 1 << 30}
# Where glibc's self-adjusting thresholds settle in a torch process (the
# mmap threshold rises to its 32 MiB cap, trimming follows at twice that).
_SETTLED = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 64 << 20, _M_TOP_PAD: 128 << 10}


_depth = {"flush": 0, "memory": 0}  # blocks entered and not left: only the outermost sets and restores


@contextlib.contextmanager
def _outermost(name: str, enter, leave):
    if _depth[name] == 0:
        enter()
    _depth[name] += 1
    try:
        yield
    finally:
        _depth[name] -= 1
        if _depth[name] == 0:
            leave()


def flush_denormals() -> contextlib.AbstractContextManager:
    """Flush subnormal floats to zero on the CPU inside the block (then back to torch's default, off).

    Adam's second moments of near-zero gradients (the pre-InstanceNorm conv
    biases, a residual projection that starts at 0) fall into the subnormal
    range, where CPU arithmetic is up to ~100x slower: an RD++ demo epoch
    took 38 s instead of 1.9 s. Values below ~1e-38 become 0, far below
    anything that changes a step. Blocks may nest (``train`` inside one).
    """
    return _outermost("flush", lambda: torch.set_flush_denormal(True), lambda: torch.set_flush_denormal(False))


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def keep_freed_memory() -> contextlib.AbstractContextManager:
    """Keep the memory a training step frees for the next step (glibc, i.e. Linux; elsewhere a no-op).

    Every step allocates and frees the same activations and gradients
    (about 400 MB of gradients alone for the Wide-ResNet-50-2 student).
    glibc hands large freed blocks back to the kernel, so each step pays
    for ``munmap`` and then for zero-filled page faults on the same
    memory: ``zero_grad`` alone took 18-26 ms of a 1.2 s step. This is what the
    PyTorch tuning guide fixes by preloading jemalloc or tcmalloc; here
    ``mallopt(3)`` sets glibc's thresholds instead (blocks up to 32 MiB
    come from the heap, the heap is not trimmed below 2 GiB of free
    memory, it grows 1 GiB at a time). On exit the thresholds go back to
    where glibc's own adjustment settles, and ``malloc_trim`` returns the
    kept memory. The settings are process-wide while the block runs; blocks
    may nest.
    """
    libc = _glibc()
    if libc is None:
        return contextlib.nullcontext()

    def keep() -> None:
        for param, value in _KEEP.items():
            libc.mallopt(param, value)

    def release() -> None:
        for param, value in _SETTLED.items():
            libc.mallopt(param, value)
        libc.malloc_trim(0)

    return _outermost("memory", keep, release)


@contextlib.contextmanager
def fast_cpu():
    """:func:`flush_denormals` and :func:`keep_freed_memory` together: how ``train`` runs."""
    with flush_denormals(), keep_freed_memory():
        yield


__all__ = ["fast_cpu", "flush_denormals", "keep_freed_memory"]
