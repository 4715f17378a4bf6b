"""Log output of a live run: readable text, or one JSON object per line for log pipelines.

Two guards sit on every line, whoever logs it (the engine, redis-py, librdkafka):
- credentials never reach the log: the password part of any URL (`redis://user:***@host`) and
  every secret the settings declared (`add_secret`) are masked in the formatted line,
  traceback included;
- librdkafka's own log lines go through the `kafka` logger, and the same message (digits
  aside) is written at most once per `REPEAT_EVERY_S`, with the count of those held back: a
  broker that is down for minutes is a few lines, not hundreds.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from urllib.parse import urlsplit, urlunsplit

REPEAT_EVERY_S = 30.0
_MASK = "***"
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)([^@\s/]+)@")
_DIGITS = re.compile(r"\d+")
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def add_secret(value: str | None) -> None:
    """Mask this value wherever it would appear in a log line (passwords, tokens, HMAC keys)."""
    if value and len(value) >= 3:   # shorter ones would mask ordinary text
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """`text` with URL passwords and declared secrets masked."""
    text = _URL_PASSWORD.sub(rf"\1{_MASK}@", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


def redact_url(url: str) -> str:
    """A URL fit for a log line: its password (if any) masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:{_MASK}@{host}"))


class JsonFormatter(logging.Formatter):
    def __init__(self, process: int | None = None) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.process is not None:
            entry["process"] = self.process
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _Redacting(logging.Formatter):
    """Masks credentials in what another formatter wrote, traceback and all."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


class RepeatFilter(logging.Filter):
    """Lets the same message (digits aside) through at most once per `every_s` seconds; the
    next one that passes says how many were held back."""

    def __init__(self, every_s: float = REPEAT_EVERY_S, max_keys: int = 1000) -> None:
        super().__init__()
        self.every_s = every_s
        self.max_keys = max_keys
        self._seen: dict[str, list] = {}   # key -> [last time written, held back since]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = _DIGITS.sub("#", record.getMessage())
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.every_s:
                seen[1] += 1
                return False
            held = seen[1] if seen is not None else 0
            if len(self._seen) >= self.max_keys:
                self._seen.clear()
            self._seen[key] = [now, 0]
        if held:
            record.msg = f"{record.getMessage()} ({held} similar line(s) held back in the last {self.every_s:.0f} s)"
            record.args = ()
        return True


_kafka_logger: logging.Logger | None = None


def kafka_logger() -> logging.Logger:
    """The logger handed to librdkafka clients (`"logger"` in their config): its lines join
    the engine's log, de-duplicated."""
    global _kafka_logger
    if _kafka_logger is None:
        logger = logging.getLogger("kafka")
        logger.addFilter(RepeatFilter())
        _kafka_logger = logger
    return _kafka_logger


def setup_logging(level: str, fmt: str = "text", process: int | None = None) -> None:
    """`process`: a cluster process's index, in every line (the processes of `--processes`
    share one stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    tag = f" [process {process}]" if process is not None else ""
    inner = (JsonFormatter(process) if fmt == "json"
             else logging.Formatter(f"%(asctime)s %(levelname)s{tag} %(name)s: %(message)s"))
    handler.setFormatter(_Redacting(inner))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
