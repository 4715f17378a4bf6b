"""`triggers run --processes N`: N engine processes on this machine as one Bytewax cluster.

Worker threads (`--workers`) share one interpreter, so they do not make the engine faster (the
evaluation core is Python and holds the interpreter); processes do. Bytewax forms a cluster from
processes that know each other's addresses (`--process-id`, `--addresses`); this starts them on
free ports of 127.0.0.1 with the same settings, spreads the topic's partitions over them (Bytewax
assigns each partition to one worker), and supervises them:

- a SIGTERM or Ctrl-C is passed to every process, which stops as a single one does (the epoch
  in hand committed, the relays after their batch) and exits 0;
- a process that exits with an error (or is killed) takes the others down: a Bytewax cluster
  cannot run on without one of its members, and a restart resumes every partition from Redis;
- the exit status is the first non-zero one, else 0.

Each process serves its metrics on `metrics_port + process_id`.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

log = logging.getLogger("engine.processes")

POLL_S = 0.2


def exit_status(code: int) -> int:
    """A child's return code as a shell reports it: killed by signal N is 128 + N."""
    return code if code >= 0 else 128 - code


def free_ports(n: int) -> list[int]:
    """`n` ports of 127.0.0.1 free now (each bound and released; the OS does not hand them out again at once)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def supervise(argv: Sequence[str], processes: int) -> int:
    """Run `triggers <argv>` (a `run` command line) as `processes` processes of one cluster."""
    addresses = ";".join(f"127.0.0.1:{p}" for p in free_ports(processes))
    cmd = [sys.executable, "-m", "engine.cli", *argv, "--processes", "1", "--addresses", addresses]
    children = [subprocess.Popen([*cmd, "--process-id", str(i)]) for i in range(processes)]
    log.info("started %d engine processes (pids %s) as one cluster on %s", processes,
             ", ".join(str(c.pid) for c in children), addresses)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:   # a second signal: at once, as a single process does
            for c in children:
                if c.poll() is None:
                    c.kill()
            return
        stopping = True
        log.info("%s: stopping the %d engine processes", signal.Signals(signum).name, processes)
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        while any(c.poll() is None for c in children):
            for c in children:
                code = c.poll()
                if code not in (None, 0) and status == 0:
                    status = exit_status(code)
                    log.error("engine process %d (pid %d) exited with %d: stopping the others (a cluster cannot run "
                              "without one of its processes; a restart resumes every partition from Redis)",
                              children.index(c), c.pid, code)
                    for other in children:
                        if other.poll() is None:
                            other.send_signal(signal.SIGTERM)
            time.sleep(POLL_S)
        for c in children:
            if c.returncode and status == 0:
                status = exit_status(c.returncode)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return status
