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
a 4K clip's peak fell from 1864 to 1707 MB (`embed run`, one clip, fer2013). It is fixed only once a
video's frames are that big (a 1080p RGB frame is 6 MB; a 640x480 one, 0.9 MB): below, the memory
it saves (70-170 MB of a 640x480 run's peak, bench/frame_memory.py) costs too much time, since every
block above 4 MiB (MTCNN's batches of frames as floats) is then mapped afresh and faulted in page by
page. Fixed for the built-in sample's 640x480 frames, `embed
run` took 7.9 M page faults and 24 s of kernel time against 2.6 M and 16 s (trimming every second).
"""

from __future__ import annotations

import ctypes
import sys
import time

# A trim hands back what the next chunk would reuse, and the kernel faults it in again page by page:
# a 2-minute 640x480 video embedded at 125 frames/s trimming every second, 161 every 3 s and 183 every
# 10 s, peaking at 1,649, 1,697 and 1,859 MB (bench/long_video.py --minutes 2 --backbone fer2013).
TRIM_EVERY_S = 3.0


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, say)
        return None


_TRIM = _malloc_trim()
_last = 0.0
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
FRAME_MMAP_THRESHOLD = 4 * 2**20


_threshold_fixed = False


def keep_frames_out_of_heap(frame_bytes: int) -> None:
    """Fix glibc's mmap threshold at 4 MiB for the rest of the process once frames of `frame_bytes`
    (RGB) are that big; smaller frames leave it as it is."""
    global _threshold_fixed
    if _TRIM is None or _threshold_fixed or frame_bytes < FRAME_MMAP_THRESHOLD:
        return
    _threshold_fixed = True
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, FRAME_MMAP_THRESHOLD)


def release_free_heap() -> None:
    """Return free heap pages to the OS, if TRIM_EVERY_S have passed since the last time."""
    global _last
    now = time.monotonic()
    if _TRIM is None or now - _last < TRIM_EVERY_S:
        return
    _last = now
    _TRIM(0)
