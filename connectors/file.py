"""JSONL file sink: backtest output and the simplest dead-letter output.

One JSON object per line, so the output can be streamed, grepped and read back with
`engine.events.decode.read_jsonl`. By default opening a `FileSink` truncates its file: a backtest is
deterministic, so re-running it rewrites its output rather than appending a second copy. A
live run sets `append`: restarted after a crash, it must keep what it wrote before (the
triggers already sent, the dead letters not yet handled), so it appends and never truncates.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from typing import IO, Annotated, Any

import msgspec

from connectors.base import DEFAULT_STATUSES, Failure, Sink, Status

__all__ = ["FileSinkConfig", "FileSink"]


class FileSinkConfig(msgspec.Struct, forbid_unknown_fields=True):
    """`path` is the output file; `-` means stdout.

    `append=False` (backtests) truncates the file when the sink opens; `append=True` (live
    runs, dead-letter files) keeps its content and writes after it. `statuses`: which
    triggers a live run writes here (the backtest's output keeps every status).
    """

    path: Annotated[str, msgspec.Meta(description="the JSONL file; - is stdout")]
    append: Annotated[bool, msgspec.Meta(
        description="keep what the file holds and write after it (a live run's relay always appends)")] = False
    statuses: Annotated[tuple[Status, ...], msgspec.Meta(
        description="which triggers go here: sent only unless it lists held_out, suppressed")] = DEFAULT_STATUSES


class FileSink(Sink):
    """Writes structs (triggers, dead letters) as JSON lines, one `write` per batch.

    Not thread-safe: one sink belongs to one worker, as Bytewax sink partitions do.
    Durability is `flush()`'s (the OS page cache), not fsync: a backtest can be re-run; a
    live run gets fsync at each `settle`. `stats.delivered` counts the lines written.
    """

    def __init__(self, config: FileSinkConfig, *, stream: IO[Any] | None = None) -> None:
        """`stream` is where path `-` writes (default stdout); the CLI passes stderr so that
        dead letters do not mix with the triggers on stdout. Ignored for a real path."""
        super().__init__()
        self.config = config
        self._encoder = msgspec.json.Encoder()
        self._owns_file = config.path != "-"
        self._text: IO[Any] | None = None  # a text stream whose binary buffer we write to
        self._str_only = False  # a text stream without a binary buffer (e.g. StringIO)
        if self._owns_file:
            # unbuffered: a write that fails (a full disk) leaves no bytes behind in a buffer that
            # a later flush would write after the batch's retry (`write_durably`)
            self._fh: IO[Any] = open(config.path, "ab" if config.append else "wb", buffering=0)
            if config.append:
                self._end_torn_line()
        else:
            target = stream if stream is not None else sys.stdout
            buffer = getattr(target, "buffer", None)
            if buffer is not None:
                self._text, self._fh = target, buffer
            else:
                self._fh = target
                self._str_only = isinstance(target, io.TextIOBase)
        self._closed = False

    def _end_torn_line(self) -> None:
        """A crash in the middle of a write can leave a last line without its newline; the
        next record would be glued to it and both lost. End it, so the torn line stays one
        bad line and everything appended after it reads back."""
        size = os.fstat(self._fh.fileno()).st_size
        if size == 0:
            return
        with open(self.config.path, "rb") as tail:
            tail.seek(size - 1)
            if tail.read(1) != b"\n":
                self._fh.write(b"\n")

    def write_batch(self, items: Sequence[msgspec.Struct]) -> None:
        """Append the batch, one object per line, with a single write call."""
        if self._closed:
            raise ValueError(f"write to a closed FileSink ({self.config.path})")
        if not items:
            return
        data = self._encoder.encode_lines(items)
        if self._text is not None:
            self._text.flush()  # keep order with what was printed to the same stream as text
        if self._str_only:
            self._fh.write(data.decode("utf-8"))
        elif self._owns_file:
            view = memoryview(data)
            while view:   # an unbuffered write may take part of it
                view = view[self._fh.write(view):]
        else:
            self._fh.write(data)
        self.stats.delivered += len(items)

    def write_durably(self, items: Sequence[msgspec.Struct]) -> None:
        """`write_batch` and `settle`; on an `OSError` (a full disk) a file is cut back to what it
        held before the batch and the error raised, so that a retry appends the batch once (before,
        each retry added a copy of it that a later flush wrote out). A file that cannot even be
        cut back (a lost mount) keeps what reached it: its lines may then come twice."""
        mark = os.fstat(self._fh.fileno()).st_size if self._owns_file and not self._closed else None
        try:
            self.write_batch(items)
            self.settle()
        except OSError:
            if mark is not None:
                try:
                    os.ftruncate(self._fh.fileno(), mark)
                except OSError:
                    pass
            raise

    def deliver(self, items: Sequence[msgspec.Struct]) -> list[Failure]:
        """Append and make durable (`settle`): delivered once on disk. An `OSError` (a full
        disk, a lost mount) fails every item transiently: an operator can fix it, and the relay
        tries again (a torn last line stays one bad line, as after a crash)."""
        before = self.stats.delivered
        try:
            self.write_durably(items)
        except OSError as e:
            self.stats.delivered = before
            why = f"cannot write {self.config.path}: {e.strerror or e}"
            self.stats.failing(why)
            return [Failure(i, why, permanent=False) for i in range(len(items))]
        if self.stats.waiting_since is not None:
            self.stats.recovered()
        return []

    def flush(self) -> None:
        if not self._closed:
            self._fh.flush()

    def settle(self) -> None:
        """Make what was written survive the process (a relay's `deliver` calls it before it
        moves its cursor past these lines): flushed to the OS and, for a real file, fsync'ed."""
        if self._closed:
            return
        self._fh.flush()
        if self._owns_file:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Flush and close; a `-` stream (stdout, stderr) is flushed but left open for the process."""
        if self._closed:
            return
        self._closed = True
        if self._owns_file:
            self._fh.close()
        else:
            self._fh.flush()

