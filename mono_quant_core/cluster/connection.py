"""Reaching a Ray cluster: the addresses we accept, importing ray, connecting, and the connection test.

Ray is imported inside the functions here, never at module level, so that
``import mono_quant_core.cluster`` works (and is cheap) without the ``[cluster]``
extra; a missing ray is a :class:`ClusterError` that says how to install it.

A process holds at most one Ray connection (``ray.init`` is process-wide).  The
connection test, :func:`check_cluster`, therefore runs ``ray.init`` in a short-lived
child process: it can never disturb a connection the process already has, and
killing the child bounds its time, whatever ray does on a bad address.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import ClusterError

LOCAL = "local"
AUTO = "auto"
CLIENT_PREFIX = "ray://"
INSTALL_HINT = "ray is not installed: pip install 'mono-quant[cluster]'"
#: The namespace our drivers use on a shared cluster (named actors, ``ray list``).
NAMESPACE = "mono-quant"


@dataclass(frozen=True)
class ClusterInfo:
    """What a connection test or a connection found: the cluster's size and ray's version."""

    address: str
    nodes: int
    cpus: float
    gpus: float
    ray_version: str


def check_address(address: str) -> str:
    """``address`` stripped, or a ClusterError when it is none of local, auto, ray://host:port, host:port."""
    text = (address or "").strip()
    if text in (LOCAL, AUTO):
        return text
    host, port = _host_port(text)
    if not host or port is None:
        raise ClusterError(f"{address!r}: not a Ray address; give local, auto, ray://host:port or host:port", address)
    return text


def _host_port(address: str) -> tuple[str, int | None]:
    rest = address.removeprefix(CLIENT_PREFIX)
    host, _, port = rest.rpartition(":")
    if not port.isdigit():
        return rest, None
    return host.strip("[]"), int(port)


def import_ray(address: str) -> ModuleType:
    """The ``ray`` module, or a ClusterError naming ``address`` and the extra to install."""
    try:
        import ray
    except ImportError:
        raise ClusterError(f"{address}: {INSTALL_HINT}", address) from None
    return ray


def probe(address: str, timeout_s: float) -> None:
    """A plain TCP connection to ``host:port`` first: a wrong port or host fails in milliseconds, not after
    ray's own retries (auto and local have nothing to probe)."""
    if address in (LOCAL, AUTO):
        return
    host, port = _host_port(address)
    assert port is not None
    try:
        with socket.create_connection((host, port), timeout=max(0.1, timeout_s)):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ClusterError(f"{address}: cannot reach {host}:{port}: {reason}", address) from None


def local_loopback(ray: ModuleType) -> None:
    """Make ray bind a private local instance to 127.0.0.1 (it otherwise picks the reachable address)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray._private import ray_constants

    # get_node_ip_address() reads this at call time: False means the loopback address.
    ray_constants.ENABLE_RAY_CLUSTER = False


def init_kwargs(address: str, num_cpus: int | None) -> dict[str, Any]:
    """``ray.init``'s arguments for ``address``: a private instance on 127.0.0.1 for local."""
    import logging

    kwargs: dict[str, Any] = {
        "namespace": NAMESPACE,
        "log_to_driver": False,
        "configure_logging": False,
        "logging_level": logging.ERROR,
    }
    if address == LOCAL:
        kwargs.update(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
        )
    else:
        kwargs["address"] = address
    return kwargs


def connect_in_thread(ray: ModuleType, address: str, kwargs: dict[str, Any], timeout_s: float) -> None:
    """``ray.init(**kwargs)`` bounded by ``timeout_s``: a ClusterError when it fails or does not answer.

    ray.init has no timeout of its own for every address kind; it runs on a daemon thread, and when it
    has not returned in time the caller gets an error (the thread is left to finish on its own, and
    disconnects again if it connects after all).
    """
    outcome: dict[str, BaseException | None] = {}
    lock = threading.Lock()

    def target() -> None:
        try:
            ray.init(**kwargs)
            error = None
        except BaseException as exc:
            error = exc
        with lock:
            outcome["error"] = error
            abandoned = "abandoned" in outcome
        if abandoned and error is None:
            ray.shutdown()  # connected after the caller gave up: leave the process unconnected

    thread = threading.Thread(target=target, name="mono-quant-ray-init", daemon=True)
    thread.start()
    thread.join(timeout_s)
    with lock:
        late = "error" not in outcome
        if late:
            outcome["abandoned"] = None
    if late:
        raise ClusterError(f"{address}: no answer from the cluster within {timeout_s:g} s", address)
    error = outcome.get("error")
    if error is not None:
        raise ClusterError(f"{address}: cannot connect: {first_line(error)}", address) from None


def start_local(ray: ModuleType, address: str, kwargs: dict[str, Any]) -> None:
    """Start the private local instance on the calling thread (starting one cannot hang on an address)."""
    try:
        ray.init(**kwargs)
    except Exception as exc:
        raise ClusterError(f"{address}: cannot start a local Ray instance: {first_line(exc)}", address) from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def cluster_info(ray: ModuleType, address: str) -> ClusterInfo:
    """The connected cluster's live nodes, CPUs and GPUs."""
    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive", node.get("alive", False)))
    return ClusterInfo(
        address=address,
        nodes=nodes,
        cpus=float(resources.get("CPU", 0.0)),
        gpus=float(resources.get("GPU", 0.0)),
        ray_version=str(ray.__version__),
    )


_CHILD = """
import json, logging, sys
import ray
address = sys.argv[1]
ray.init(address=address, namespace=sys.argv[2], log_to_driver=False, configure_logging=False,
         logging_level=logging.ERROR)
resources = ray.cluster_resources()
nodes = sum(1 for n in ray.nodes() if n.get("Alive", n.get("alive", False)))
print("MONO_QUANT_CLUSTER " + json.dumps({"nodes": nodes, "cpus": resources.get("CPU", 0.0),
      "gpus": resources.get("GPU", 0.0), "ray_version": ray.__version__}), flush=True)
ray.shutdown()
"""


def check_cluster(address: str, timeout_s: float = 10.0) -> ClusterInfo:
    """Test ``address`` (the window's *Test connection*): its size, or a ClusterError within ``timeout_s``.

    ``local`` needs only ray installed (a private instance is started when jobs run); the size is this
    computer's.  Other addresses are probed over TCP, then connected to from a child process that is
    killed when it runs past ``timeout_s``.  An address this process is connected to answers at once.
    """
    address = check_address(address)
    import_ray(address)
    from .runner import connected_info

    known = connected_info(address)
    if known is not None:
        return known
    if address == LOCAL:
        return _local_info()
    deadline = time.monotonic() + timeout_s  # one limit for the probe and the child together
    probe(address, timeout_s)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0")}
    try:
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, address, NAMESPACE],
            capture_output=True,
            text=True,
            timeout=max(0.1, deadline - time.monotonic()),
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{address}: no answer from the cluster within {timeout_s:g} s", address) from None
    for line in child.stdout.splitlines():
        if line.startswith("MONO_QUANT_CLUSTER "):
            found = json.loads(line.split(" ", 1)[1])
            return ClusterInfo(
                address, int(found["nodes"]), float(found["cpus"]), float(found["gpus"]), str(found["ray_version"])
            )
    raise ClusterError(f"{address}: cannot connect: {_child_reason(child.stderr)}", address)


def _child_reason(stderr: str) -> str:
    """The last error line the child printed (ray's traceback ends with it)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":", 1)[0] or "Exception" in line.split(":", 1)[0]]
    return (errors or lines or ["the connection test ended without an answer"])[-1]


def _local_info() -> ClusterInfo:
    import ray

    gpus = 0.0
    if "torch" in sys.modules:
        import torch

        gpus = float(torch.cuda.device_count())
    return ClusterInfo(LOCAL, 1, float(os.cpu_count() or 1), gpus, str(ray.__version__))
