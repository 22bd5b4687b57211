"""glibc's allocator told to keep the memory a process frees, not hand it back to the kernel.

A tf.data image pipeline allocates and frees megabytes per image (encoded bytes, decoded
and resized tensors, batches) from many threads. With glibc's defaults much of that is
returned to the kernel (trimmed arena tops, memory-mapped blocks) and faulted back in,
zeroed, by the next image: the kernel's time then rivals the decoding's. Raising the
trim threshold, padding arena growth and fixing the mmap threshold at its largest keeps
that memory in the process; the cost is a resident size that stays near its peak.

A no-op (False) where the C library is not glibc.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's <malloc.h>
SETTINGS = (
    (M_MMAP_THRESHOLD, 32 << 20),  # glibc's largest: smaller blocks come from the arenas
    (M_TRIM_THRESHOLD, (1 << 31) - 1),  # never trim an arena's free top
    (M_TOP_PAD, 64 << 20),  # grow an arena by at least this much at a time
)


def keep_freed_memory() -> bool:
    """Set `SETTINGS` through `mallopt`; True if glibc took every one."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc's own symbol: another libc's mallopt may differ
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all([mallopt(param, value) == 1 for param, value in SETTINGS])
