"""Hand freed heap memory back to the operating system while a long video streams.

Streaming holds a bounded amount of memory (a few chunks of frames), yet glibc's malloc keeps what
is freed: frames, crops and activations come in many sizes from several threads, the freed blocks
fragment the heap, and the process's resident size climbs with the video's length although the
bytes in use do not. Measured on a 4-minute 640x480 video (`embed run`, glibc's mallinfo2): heap in
use stayed at 0.3-0.4 GB while free-but-held memory rose from 0.3 to 0.6 GB in 140 s, and the peak
resident size kept climbing (1.98 GB and rising); trimming once a second held the peak at 1.61 GB.
No library does this for a Python process, and `malloc_trim` is glibc's own call for it, hence
this small module. On other C libraries it does nothing.

Big frames are the other half: glibc serves a block above its mmap threshold by mmap and returns it
on free, but the threshold rises to the size of the largest block freed (up to 32 MB), so after the
first 4K frame (25 MB as RGB) every later one came from the heap and stayed there when freed, in each
thread's arena. Fixing the threshold at 4 MiB keeps frames of high-resolution videos out of the heap:
a 4K clip's peak fell from 1864 to 1707 MB (`embed run`, one clip, fer2013). It costs kernel time
(every block above 4 MiB, MTCNN's batches of frames as floats, is mapped afresh and faulted in page by
page), and fixing it only for frames of 4 MiB and up, with a trim every 3 s, ran the built-in sample
with 42 CPU-s instead of 54-62; but an hour of 640x480 video then peaked at 1.54x a 10-s clip's
(2,048 MB, bench/long_video.py --minutes 60) against 1.30x, so memory keeps the fixed threshold,
and on the CPU stage one keeps its own transient blocks under it instead (the crops' float windows,
a backbone's `cpu_batch`).
"""

from __future__ import annotations

import ctypes
import sys
import time

TRIM_EVERY_S = 1.0  # malloc_trim walks the heap (milliseconds): at most once a second, even at GPU chunk rates


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


_LIBC = _glibc()
_TRIM = _LIBC.malloc_trim if _LIBC is not None else None
_last = 0.0
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
FRAME_MMAP_THRESHOLD = 4 * 2**20
if _LIBC is not None:
    _LIBC.mallopt(M_MMAP_THRESHOLD, FRAME_MMAP_THRESHOLD)


def release_free_heap() -> None:
    """Return free heap pages to the OS, if TRIM_EVERY_S have passed since the last time."""
    global _last
    now = time.monotonic()
    if _TRIM is None or now - _last < TRIM_EVERY_S:
        return
    _last = now
    _TRIM(0)
