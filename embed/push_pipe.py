"""A pushed stream's bytes on their way to the decoder: what a client uploads (an MPEG-TS stream, a
browser's WebM) is written in by the server as it arrives and read by the source's decoder thread,
which opens it like any other source (VideoStream accepts a readable object).

Bounded: a writer waits while `capacity` bytes are unread (the upload then slows down to the decoder's
pace rather than piling up in memory). Reads return what has arrived, as FFmpeg's own pipe protocol
does, never waiting to fill a whole buffer. Nothing is written to disk. With `idle_timeout`, a read
that waits that long for a first or a next byte raises StreamIdle (a sender that went away without
ending its upload frees its source), and every later read sees the end.
"""

from __future__ import annotations

import io
import threading

CAPACITY = 4 << 20  # bytes: seconds of a webcam stream, a bounded memory cost per source


class StreamIdle(Exception):
    """Nothing arrived on a pushed stream for its idle timeout."""


class PushPipe(io.RawIOBase):
    def __init__(self, name: str = "<push>", capacity: int = CAPACITY, idle_timeout: float | None = None):
        super().__init__()
        self.name, self.capacity, self.idle_timeout = name, capacity, idle_timeout
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._ended = False  # the writer is done: reads drain what is left, then see the end
        self._gone = False  # the reader is done: writes fail
        self.received = 0  # bytes written in, in all

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        with self._cond:
            if not self._cond.wait_for(lambda: self._buf or self._ended or self._gone, timeout=self.idle_timeout):
                self._ended = True  # the decoder's later reads (FFmpeg closing its probe) see the end
                raise StreamIdle(
                    f"no bytes for {self.idle_timeout:g} s (the sender stopped without ending its upload); "
                    f"fix: send again to a new source, or start the server with a longer --idle-timeout"
                )
            n = min(len(b), len(self._buf))
            b[:n] = self._buf[:n]
            del self._buf[:n]
            self._cond.notify_all()
            return n

    def push(self, data: bytes) -> None:
        """Append bytes, waiting while the pipe is full; BrokenPipeError once the reader has gone."""
        with self._cond:
            while len(self._buf) >= self.capacity and not self._gone:
                self._cond.wait()
            self._append(data)

    def offer(self, data: bytes) -> bool:
        """Append bytes if the pipe has room, never waiting (an event loop's write): False if it is
        full, BrokenPipeError once the reader has gone."""
        with self._cond:
            if len(self._buf) >= self.capacity and not self._gone:
                return False
            self._append(data)
            return True

    def _append(self, data: bytes) -> None:
        if self._gone:
            raise BrokenPipeError(f"{self.name}: the stream's reader has stopped")
        self._buf += data
        self.received += len(data)
        self._cond.notify_all()

    def end(self) -> None:
        """The writer is done (the upload ended): the reader sees the end after what is left."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def close(self) -> None:
        """The reader is done: waiting and later writers fail, and what was unread is let go."""
        with self._cond:
            self._gone, self._ended = True, True
            self._buf.clear()
            self._cond.notify_all()
        super().close()
