"""A pushed stream's bytes on their way to the decoder: what a client uploads (an MPEG-TS stream, a
browser's WebM) is written in by the server as it arrives and read by the source's decoder thread,
which opens it like any other source (VideoStream accepts a readable object).

Bounded: a writer waits while `capacity` bytes are unread (the upload then slows down to the decoder's
pace rather than piling up in memory). Reads return what has arrived, as FFmpeg's own pipe protocol
does, never waiting to fill a whole buffer. Nothing is written to disk.
"""

from __future__ import annotations

import io
import threading

CAPACITY = 4 << 20  # bytes: seconds of a webcam stream, a bounded memory cost per source


class PushPipe(io.RawIOBase):
    def __init__(self, name: str = "<push>", capacity: int = CAPACITY):
        super().__init__()
        self.name, self.capacity = name, capacity
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._ended = False  # the writer is done: reads drain what is left, then see the end
        self._gone = False  # the reader is done: writes fail
        self.received = 0  # bytes written in, in all

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        with self._cond:
            while not self._buf and not self._ended and not self._gone:
                self._cond.wait()
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
