"""Several server processes on one port, so that one service uses every core.

Python runs one thread at a time, so one process serves about one core's
worth of calls. As in grpc's multiprocessing example, the parent reserves the
port with ``SO_REUSEPORT``, forks the workers before any of them creates gRPC
state, and each worker binds the same port; the kernel spreads connections
among them.

    with reserved_port("127.0.0.1", 0) as port:
        children = start(4, lambda ready: serve_one(port, ready))
        ...
        stop(children, grace_seconds=10)
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.process import BaseProcess

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@contextmanager
def reserved_port(host: str, port: int) -> Iterator[int]:
    """Hold ``host:port`` (or a free port, for 0) open with SO_REUSEPORT while workers bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        yield sock.getsockname()[1]


def start(count: int, work: Callable[[Callable[[], None]], None], timeout: float = 60) -> list[BaseProcess]:
    """Fork ``count`` processes running ``work(ready)``; return once each has called ``ready()``.

    Fork, so that the workers share what the parent loaded; waiting for ``ready``
    means the port is served by the time this returns.
    """
    context = multiprocessing.get_context("fork")
    started = context.Queue()
    parent = os.getpid()
    children = [
        context.Process(target=_orphan_proof, args=(parent, work, lambda: started.put(os.getpid())), name=f"worker-{i}")
        for i in range(count)
    ]
    for child in children:
        child.start()
    for _ in children:
        started.get(timeout=timeout)
    return children


def _orphan_proof(parent: int, work: Callable[[Callable[[], None]], None], ready: Callable[[], None]) -> None:
    """Run ``work`` in a worker that gets SIGTERM when the parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # The parent died before the request took effect.
        return
    work(ready)


def stop(children: list[BaseProcess], grace_seconds: float) -> None:
    """SIGTERM every worker (each finishes its in-flight calls), then wait for them."""
    for child in children:
        if child.pid is not None and child.is_alive():
            os.kill(child.pid, signal.SIGTERM)
    for child in children:
        child.join(grace_seconds + 10)
        if child.is_alive():
            child.kill()
            child.join()
