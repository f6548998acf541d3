"""Test helper: a video's packets written into a pipe as MPEG-TS at real-time pace, as ffmpeg relaying a
camera would (`ffmpeg -re -i cam.mp4 -c copy -f mpegts -`), without ffmpeg.

`python tests/live_feed.py VIDEO [--stop-after S] [--no-realtime]` remuxes VIDEO's video packets (no
re-encoding: a reader decodes exactly the frames of VIDEO) and sleeps until each packet's time before
writing it. --stop-after S cuts the stream off at S seconds: the process exits at once, without the
container's end, as a broken connection does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import av


def feed(src: str, out, stop_after: float | None = None, realtime: bool = True) -> int:
    """Remux src's video packets into `out` (a binary file object); returns the packets written."""
    n = 0
    with av.open(src) as inp:
        vin = inp.streams.video[0]
        # Small I/O buffer, flushed packets and one PES packet per frame (the muxer would otherwise
        # gather small frames): each frame reaches the pipe when it is muxed, as live.
        options = {"flush_packets": "1", "pes_payload_size": "0"}
        container = av.open(out, "w", format="mpegts", buffer_size=1880, options=options)
        vout = container.add_stream_from_template(vin)
        start, t0 = time.monotonic(), None
        for packet in inp.demux(vin):
            if packet.dts is None:  # the demuxer's end-of-stream marker
                continue
            t = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
            t0 = t if t0 is None else t0
            if stop_after is not None and t - t0 >= stop_after:
                out.flush()
                os._exit(0)  # broken off: no end of container
            if realtime:
                time.sleep(max(0.0, start + (t - t0) - time.monotonic()))
            packet.stream = vout
            container.mux(packet)
            out.flush()
            n += 1
        container.close()
    return n


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("video")
    ap.add_argument("--stop-after", type=float)
    ap.add_argument("--no-realtime", action="store_true")
    a = ap.parse_args()
    feed(a.video, sys.stdout.buffer, a.stop_after, realtime=not a.no_realtime)
