"""Decoding off the evaluation core: a second process reads and decodes an event file while
this one evaluates (issue 15; Flink's lead at parallelism 1 came from decoding on another thread).

JSON decoding and validation are a sixth of a backtest's time and cannot overlap with the
evaluation in one process (msgspec holds the GIL). A forked reader runs `decode_jsonl` and sends
each `DecodedBatch` on a pipe as msgpack, which this process decodes at a third of the cost of
the JSON: the same events, in the same order, with the same dead letters. A batch that msgpack
cannot carry (an integer beyond 64 bits, a lone surrogate in a string) is sent as its raw lines
and decoded here, so the output never depends on the path it took.

The pipe bounds the read-ahead (the reader blocks while a few batches wait), so memory stays
constant. Used only where it can win: at least two CPUs and input worth a fork; else the batches
are decoded in this process, as before.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from collections.abc import Iterator
from pathlib import Path

import msgspec

from engine.events.decode import DecodedBatch, EventDecoder, decode_jsonl, lines_of

__all__ = ["decode_jsonl_ahead", "worth_a_reader"]

MIN_BYTES = 4 << 20   # below this a file decodes faster than a process starts
STOP_WAIT_S = 2.0     # after the consumer stopped: how long the reader has to notice, before it is killed
_BATCH, _RAW, _END, _FAILED = b"B", b"R", b"E", b"F"


class _Raw(msgspec.Struct, array_like=True):
    """A batch msgpack cannot carry as events: its lines, decoded by the receiver."""

    lines: list[tuple[bytes, str]]
    size: int


def worth_a_reader(path: str | Path) -> bool:
    """Whether a reader process pays: a second CPU to run it on, and more than `MIN_BYTES` (stdin:
    unknown, assumed large)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        cpus = os.cpu_count() or 1
    if cpus < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return False
    if str(path) == "-":
        return True
    try:
        return Path(path).stat().st_size >= MIN_BYTES
    except OSError:
        return False   # the inline path reports the error as it always has


def decode_jsonl_ahead(path: str | Path, batch_size: int, decoder: EventDecoder | None = None,
                       ) -> Iterator[DecodedBatch]:
    """`decode_jsonl(path, batch_size, decoder)`, decoded by a reader process when
    `worth_a_reader(path)`. Stopping the iteration stops the reader."""
    if not worth_a_reader(path):
        yield from decode_jsonl(path, batch_size, decoder)
        return
    decoder = decoder if decoder is not None else EventDecoder()
    stdin = str(path) == "-"
    # opened here, so that a missing or unreadable file fails as it does inline; a duplicate of
    # stdin, since a starting child process closes its own stdin
    source = os.dup(0) if stdin else os.open(path, os.O_RDONLY)
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    reader = ctx.Process(target=_read, args=(send, receive, source, "<stdin>" if stdin else str(path), batch_size,
                                             decoder.max_bytes), daemon=True, name="triggers-decode")
    try:
        reader.start()
    finally:
        send.close()
        os.close(source)
    batches = msgspec.msgpack.Decoder(DecodedBatch)
    raws = msgspec.msgpack.Decoder(_Raw)
    try:
        while True:
            try:
                message = receive.recv_bytes()
            except EOFError:
                reader.join(5)
                raise RuntimeError(f"the process decoding {path} ended without a word (exit code "
                                   f"{reader.exitcode}): killed, or out of memory?") from None
            tag, body = message[:1], memoryview(message)[1:]
            if tag == _BATCH:
                yield batches.decode(body)
            elif tag == _RAW:
                raw = raws.decode(body)
                events, dead = decoder.decode_batch(raw.lines)
                yield DecodedBatch(events, dead, raw.size)
            elif tag == _END:
                return
            else:   # the reader failed (an engine bug, or the file went away): its traceback
                raise RuntimeError(f"decoding {path} failed in the reader process:\n{bytes(body).decode()}")
    finally:
        receive.close()   # a reader blocked on a full pipe gets a broken pipe and ends
        reader.join(STOP_WAIT_S)
        if reader.is_alive():
            reader.kill()
            reader.join()


def _read(send, receive, source: int, name: str, batch_size: int, max_bytes: int) -> None:
    """The reader process: batches in file order, then `_END` (or `_FAILED` with the error)."""
    receive.close()   # only the consumer holds the read end: when it stops, a send fails at once
    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # not a handler of the parent's (a live run's)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    encode = msgspec.msgpack.Encoder().encode
    try:
        lines: list[tuple[bytes, str]] = []
        decoder = EventDecoder(max_bytes)
        for item in lines_of(open(source, "rb"), name):
            lines.append(item)
            if len(lines) >= batch_size:
                send.send_bytes(_message(encode, decoder, lines))
                lines = []
        if lines:
            send.send_bytes(_message(encode, decoder, lines))
        send.send_bytes(_END)
    except (BrokenPipeError, KeyboardInterrupt):
        pass   # the consumer stopped (an early end, Ctrl-C): nothing to say
    except BaseException:
        try:
            send.send_bytes(_FAILED + traceback.format_exc().encode())
        except OSError:
            pass
    finally:
        send.close()


def _message(encode, decoder: EventDecoder, lines: list[tuple[bytes, str]]) -> bytes:
    events, dead = decoder.decode_batch(lines)
    size = sum(len(raw) + 1 for raw, _ in lines)
    try:
        return _BATCH + encode(DecodedBatch(events, dead, size))
    except (OverflowError, UnicodeEncodeError, msgspec.EncodeError, RecursionError):
        return _RAW + encode(_Raw(lines, size))
