"""Hand freed heap memory back to the operating system while a long video streams.

Streaming holds a bounded amount of memory (a few chunks of frames), yet glibc's malloc keeps what
is freed: frames, crops and activations come in many sizes from several threads, the freed blocks
fragment the heap, and the process's resident size climbs with the video's length although the
bytes in use do not. Measured on a 4-minute 640x480 video (`embed run`, glibc's mallinfo2): heap in
use stayed at 0.3-0.4 GB while free-but-held memory rose from 0.3 to 0.6 GB in 140 s, and the peak
resident size kept climbing (1.98 GB and rising); trimming once a second held the peak at 1.61 GB.
No library does this for a Python process, and `malloc_trim` is glibc's own call for it, hence
this small module. On other C libraries it does nothing.
"""

from __future__ import annotations

import ctypes
import sys
import time

TRIM_EVERY_S = 1.0  # malloc_trim walks the heap (milliseconds): at most once a second, even at GPU chunk rates


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, say)
        return None


_TRIM = _malloc_trim()
_last = 0.0


def release_free_heap() -> None:
    """Return free heap pages to the OS, if a second has passed since the last time."""
    global _last
    now = time.monotonic()
    if _TRIM is None or now - _last < TRIM_EVERY_S:
        return
    _last = now
    _TRIM(0)
