"""The webhook sink on `http.client` against the same sink on httpx, interleaved in one run.

    python -m bench.webhook_client [--rounds 5] [--seconds 1.5] [--concurrency 1,4] [--delay-ms 0]

Needs httpx in the environment (`.venv/bin/pip install httpx`); the engine itself does not.

Both clients run inside `WebhookSink` (batch_size=1: one trigger per request, keep-alive, the
same retry loop, thread pool and headers): (a) is `connectors.webhook.WebhookSink` as shipped,
(b) the same class with its per-attempt transport replaced by one shared `httpx.Client` whose
pool holds `concurrency` connections. The receiver is a raw asyncio HTTP/1.1 server in its own
process that answers every request at once (after `--delay-ms`, if given), so the figures are
the clients' own cost; in its own process, it does not compete with them for the GIL.

Per round and client: `write_batch` of 64 triggers, repeated for `--seconds`; requests/s,
client CPU per request (all threads of this process: what the engine's evaluation would lose,
as it shares the GIL with the sink's threads), and each request's latency from the sink's view
(`_deliver`: checkout, encode, POST, response). The order of the two clients alternates from
one round to the next; medians of the rounds are printed, with httpx's figures as a ratio of
http.client's. This machine is noisy (±30% between runs): trust the ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from connectors.webhook import WebhookSink, WebhookSinkConfig, _retry_after
from engine.actions.trigger import SENT, Trigger, trigger_id

_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


def serve(ready: Connection, delay_ms: float) -> None:
    """A minimal HTTP/1.1 keep-alive receiver: reads each request (headers and Content-Length
    body) and answers 200; sends its port through `ready`, then runs until killed."""

    class Receiver(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buffer = bytearray()

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                length = 0
                for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(self.buffer) < end + 4 + length:
                    return
                del self.buffer[: end + 4 + length]
                if delay_ms:
                    asyncio.get_running_loop().call_later(delay_ms / 1000, self.transport.write, _RESPONSE)
                else:
                    self.transport.write(_RESPONSE)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Receiver, "127.0.0.1", 0, backlog=128)
        ready.send(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


class _NoQueue:
    """Stands in for the sink's idle-connection queue: httpx keeps its own pool."""

    def put(self, item: object) -> None:
        pass


class HttpxWebhookSink(WebhookSink):
    """`WebhookSink` with each attempt made by one shared `httpx.Client` (keep-alive pool of
    `concurrency` connections, httpx's per-phase timeouts of `timeout_s`)."""

    def __init__(self, config: WebhookSinkConfig) -> None:
        import httpx

        super().__init__(config)
        self._httpx = httpx
        n = config.concurrency
        self._client = httpx.Client(
            headers=self._base_headers,
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
        )
        self._idle = _NoQueue()  # type: ignore[assignment]

    def _checkout(self) -> Any:
        return self._client

    def _attempt(self, conn: Any, body: bytes, key: str) -> tuple[int | None, str, bool, float | None]:
        httpx = self._httpx
        try:
            resp = self._client.post(self.config.url, content=body, headers={"Idempotency-Key": key})
        except httpx.TimeoutException:
            return None, f"timed out after {self.config.timeout_s} s", True, None
        except httpx.TransportError as exc:
            return None, f"{type(exc).__name__}: {exc}", True, None
        status = resp.status_code
        if 200 <= status < 300:
            return status, "", False, None
        retry = status >= 500 or status in (408, 429)
        return status, f"HTTP {status}", retry, _retry_after(resp.headers.get("Retry-After")) if retry else None

    def close(self) -> None:
        super().close()
        self._client.close()


def _triggers(n: int) -> list[Trigger]:
    return [
        Trigger(trigger_id=trigger_id("cart-abandoned", f"c-{i}", f"e-{i}"), rule_id="cart-abandoned",
                customer_id=f"c-{i}", action="cart-reminder", channel="email", status=SENT, reason=None,
                fired_at="2026-11-20T14:33:11.250Z", cause_event_id=f"e-{i}",
                payload={"sku": "A-77", "value": 129.8})
        for i in range(n)
    ]


class Round:
    def __init__(self, requests: int, seconds: float, cpu_s: float, latencies: list[float]) -> None:
        self.requests, self.seconds, self.cpu_s, self.latencies = requests, seconds, cpu_s, latencies

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.requests * 1e6


def measure(make: Callable[[WebhookSinkConfig], WebhookSink], url: str, concurrency: int,
            seconds: float, batch: Sequence[Trigger]) -> Round:
    config = WebhookSinkConfig(url=url, concurrency=concurrency, timeout_s=5.0)
    with make(config) as sink:
        latencies: list[float] = []
        deliver = sink._deliver

        def timed(chunk: Sequence[Trigger]) -> Any:
            started = time.perf_counter()
            outcome = deliver(chunk)
            latencies.append(time.perf_counter() - started)  # list.append is atomic under the GIL
            return outcome

        sink._deliver = timed  # type: ignore[method-assign]
        sink.write_batch(batch)  # warm up: connections open, code paths hot
        latencies.clear()
        sent = sink.stats.delivered
        cpu, started = time.process_time(), time.perf_counter()
        while time.perf_counter() - started < seconds:
            sink.write_batch(batch)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        requests = sink.stats.delivered - sent
        assert sink.stats.failed == 0 and sink.stats.retries == 0, "the receiver must answer every request at once"
    return Round(requests, elapsed, cpu, latencies)


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="per round and client")
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="the receiver's answer delay")
    args = parser.parse_args(argv)
    try:
        import httpx
    except ImportError:
        print("httpx is not installed: .venv/bin/pip install httpx", file=sys.stderr)
        return 2

    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    receiver = ctx.Process(target=serve, args=(theirs, args.delay_ms), daemon=True)
    receiver.start()
    try:
        port = ours.recv()
        url = f"http://127.0.0.1:{port}/hooks/triggers"
        batch = _triggers(64)
        clients: dict[str, Callable[[WebhookSinkConfig], WebhookSink]] = {
            "http.client": WebhookSink, "httpx": HttpxWebhookSink,
        }
        print(f"Python {platform.python_version()}, httpx {httpx.__version__}, {multiprocessing.cpu_count()} CPUs; "
              f"receiver answers after {args.delay_ms:g} ms; batch_size=1; {args.rounds} rounds of "
              f"{args.seconds:g} s per client, interleaved")
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            rounds: dict[str, list[Round]] = {name: [] for name in clients}
            for r in range(args.rounds):
                order = list(clients) if r % 2 == 0 else list(reversed(clients))
                for name in order:
                    rounds[name].append(measure(clients[name], url, concurrency, args.seconds, batch))
            print(f"\nconcurrency {concurrency}")
            print(f"  {'client':<18} {'req/s':>8} {'(min-max)':>15} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11}")
            figures: dict[str, tuple[float, float, float, float]] = {}
            for name, rs in rounds.items():
                lat = sorted(x for r in rs for x in r.latencies)
                rate = statistics.median(r.rate for r in rs)
                cpu = statistics.median(r.cpu_us for r in rs)
                p50, p99 = _quantile(lat, 0.5) * 1e3, _quantile(lat, 0.99) * 1e3
                figures[name] = (rate, p50, p99, cpu)
                lo, hi = min(r.rate for r in rs), max(r.rate for r in rs)
                print(f"  {name:<18} {rate:>8,.0f} {f'({lo:,.0f}-{hi:,.0f})':>15} {p50:>8.3f} {p99:>8.3f} {cpu:>11.0f}")
            a, b = figures["http.client"], figures["httpx"]
            print(f"  {'httpx/http.client':<18} {b[0] / a[0]:>7.2f}x {'':>15} {b[1] / a[1]:>7.2f}x {b[2] / a[2]:>7.2f}x "
                  f"{b[3] / a[3]:>10.2f}x")
    finally:
        receiver.kill()
        receiver.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
