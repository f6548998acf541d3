"""Stage one's memory: the chunk budget, and the allocator policy that keeps a long video's resident
memory flat.

Streaming holds a bounded amount of memory, yet glibc's malloc keeps what is freed: frames, crops and
activations of many sizes from several threads fragment the heap, and the resident size would climb
with the video's length. Calls of glibc's own hold it (no library does this for a Python process):
the mmap threshold is fixed, so frames of high-resolution videos are mapped and returned to the OS
when freed rather than kept in each thread's arena; a heap keeps up to HEAP_TRIM_THRESHOLD free at
its top for the next network call; and the streaming loops hand free pages back (`malloc_trim`) at
most once a second. What each costs and saves: docs/performance.md,
"Memory against picture size" and "An hour of video in bounded memory". On other C libraries
both do nothing.

The policy belongs to the process, so importing this module changes nothing: stage one's entry
points (`embed run`, a dask worker's task, `stream_video`, the engine) call `apply_allocator_policy`.

Python's cyclic collector gets a policy of its own, for every command of both CLIs (`apply_gc_policy`):
importing torch and its companions makes about a million objects that live as long as the process,
and with CPython's default thresholds the collections that run during those imports walk them again
and again, a sixth of a command's start-up CPU (docs/performance.md, "Start-up and the collector").
"""

from __future__ import annotations

import ctypes
import functools
import gc
import sys
import threading
import time

# Frames decoded, tracked, embedded and written at a time: at most CHUNK_FRAMES, and at most
# CHUNK_MB of full-resolution RGB frames, so a 4K video's chunks hold about as many bytes as a
# 640x480 one's (64 frames of 640x480 are 56 MiB; of 3840x2160, 2 frames). Several copies of a chunk
# are alive at once (the decoder runs DECODE_AHEAD chunks ahead, the tracker holds one back), so
# memory is set by this budget, not by the picture size.
CHUNK_FRAMES = 64
CHUNK_MB = 64.0
TRIM_EVERY_S = 1.0  # malloc_trim walks the heap (milliseconds): at most once a second, even at GPU chunk rates
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
# Blocks above this are mapped afresh and faulted in page by page: stage one keeps its own transient
# blocks on the CPU under it (the crops' float windows, a backbone's `cpu_batch`, MTCNN's batches).
FRAME_MMAP_THRESHOLD = 4 * 2**20
# Free memory a heap keeps at its top between the trims (release_free_heap). Fixing the mmap threshold
# also fixes this one at glibc's 128 KiB default, and then every freed activation of a few MiB went back
# to the kernel at once and was faulted in again by the next network call: three quarters of
# `embed run`'s page faults (docs/performance.md, "Page faults and the trim threshold").
HEAP_TRIM_THRESHOLD = 64 * 2**20


@functools.cache
def _glibc():
    """The C library if it is glibc (it has malloc_trim); None elsewhere (musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (raises AttributeError where it is not glibc)
    except (OSError, AttributeError):
        return None
    return libc


# Young collections every 10,000 net allocations (CPython's default: 700), and a full one after at
# most 100 young-to-middle ones (default: 10). Cyclic garbage then waits longer for its collection; it
# is a small share of what a command frees, and reference counting frees the rest at once.
GC_THRESHOLDS = (10_000, 100, 10)


def apply_gc_policy() -> None:
    """Set the cyclic collector's thresholds for this process (GC_THRESHOLDS); call it before the
    heavy imports."""
    gc.set_threshold(*GC_THRESHOLDS)


@functools.cache
def apply_allocator_policy() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (once; True where glibc took them)."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, FRAME_MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD))


_last_trim = 0.0
_trim_lock = threading.Lock()


def release_free_heap() -> None:
    """Return free heap pages to the OS, if TRIM_EVERY_S have passed since the last time."""
    global _last_trim
    libc = _glibc()
    now = time.monotonic()
    with _trim_lock:
        if libc is None or now - _last_trim < TRIM_EVERY_S:
            return
        _last_trim = now
    libc.malloc_trim(0)
