"""Host memory tuning for long CPU runs: keep large freed buffers for reuse.

glibc hands every allocation above its mmap threshold (at most 32 MiB by default) a fresh
mapping and unmaps it on free, so a tensor of that size made anew each step (the gradient of
a 2^19-entry hash table is 42 MB) pays for zeroed pages again at every touch: about 10 ms a
step on the 2-core reference machine, where a reused buffer costs 1-2 ms. Raising the
threshold (and the trim threshold, so the heap keeps what it grew) lets such buffers be
reused. The radistill command and the benchmarks call :func:`reuse_large_buffers` once at
start; a Python program may call it too. The process then keeps up to 2 GiB of freed heap
until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # allocations below 1 GiB come from the heap
TRIM_THRESHOLD = (1 << 31) - 1  # the heap returns free memory to the system only above 2 GiB (mallopt takes an int)


def reuse_large_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds for this process.

    Returns True when they were set; False where the C library is not glibc (macOS, musl,
    Windows), which is left untouched.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mapped = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # older glibc refuses more than 32 MiB
    trimmed = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(mapped) and bool(trimmed)
