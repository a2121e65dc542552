"""The worker-thread side of running queue jobs on a Ray cluster, through ``mono_quant_core.cluster``.

Every function here runs on one of the queue's worker threads: connecting may
take seconds (or fail after its timeout) and ``import ray`` is slow, so
neither ever happens on the GUI thread or on the application's start path.
``RayCluster.run_job`` blocks until the remote job ends and calls its
callbacks on the calling thread, like :func:`mono_quant_core.jobs.run_job`;
the queue runs one such call per worker thread, several at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mono_quant_gui.run.worker import TaskContext

#: Seconds a connection attempt may take before the run gives up with the engine's error.
CONNECT_TIMEOUT_S = 15.0
#: Seconds Test connection in Preferences waits for an answer.
CHECK_TIMEOUT_S = 10.0
#: What the Host column says for a job run in the application's own process.
THIS_COMPUTER = "this computer"


class Cluster(Protocol):
    """What the queue uses of ``mono_quant_core.cluster.RayCluster`` (tests inject a fake one)."""

    def connect(self, timeout_s: float = ...) -> Any: ...

    def default_concurrency(self) -> int: ...

    def run_job(
        self,
        job: Any,
        progress: Any = None,
        cancel: Any = None,
        on_event: Callable[[str, str], None] | None = None,
    ) -> Any: ...

    def close(self) -> None: ...


#: ``factory(address, concurrency or None) -> Cluster``; called on a worker thread.
ClusterFactory = Callable[[str, int | None], Cluster]


def ray_cluster(address: str, concurrency: int | None) -> Cluster:
    """The engine's ``RayCluster`` for ``address`` (imported here: ray loads on the worker thread)."""
    from mono_quant_core.cluster import RayCluster

    cluster: Cluster = RayCluster(address, concurrency=concurrency)
    return cluster


@dataclass(frozen=True)
class Connection:
    """A connected cluster, what it reported (a ``ClusterInfo``) and how many jobs run on it at once."""

    cluster: Cluster
    info: Any
    concurrency: int


def connect_task(ctx: TaskContext, factory: ClusterFactory, address: str, concurrency: int, limit: int) -> Connection:
    """Make the cluster object, connect (bounded by CONNECT_TIMEOUT_S) and settle the concurrency:
    ``concurrency`` when set, else the cluster's own default; always 1 to ``limit``."""
    ctx.progress(0, 0, f"connecting to the Ray cluster at {address}")
    cluster = factory(address, concurrency or None)
    try:
        info = cluster.connect(timeout_s=CONNECT_TIMEOUT_S)
        jobs = concurrency or cluster.default_concurrency()
    except BaseException:
        cluster.close()
        raise
    return Connection(cluster, info, max(1, min(int(jobs), limit)))


def remote_job_task(ctx: TaskContext, cluster: Cluster, job: Any, on_event: Callable[[str, str], None]) -> Any:
    """Run ``job`` on the cluster; the same ``JobOutcome`` as a local run, its output written here."""
    return cluster.run_job(job, progress=ctx.progress, cancel=ctx.cancel, on_event=on_event)


def close_task(_ctx: TaskContext, cluster: Cluster) -> None:
    """Disconnect (a private ``local`` instance is shut down)."""
    cluster.close()


def address_problem(address: str) -> str | None:
    """Why ``address`` is not a Ray address (the engine's rule), or None when it is one."""
    from mono_quant_core.cluster import ClusterError, check_address

    try:
        check_address(address)
    except ClusterError as exc:
        return str(exc)
    return None


def check_task(_ctx: TaskContext, address: str) -> Any:
    """Preferences' Test connection: the ``ClusterInfo`` of ``address``, or the engine's ClusterError."""
    from mono_quant_core.cluster import check_cluster

    return check_cluster(address, timeout_s=CHECK_TIMEOUT_S)


def describe_info(info: Any) -> str:
    """``3 nodes, 48 CPUs, 2 GPUs (Ray 2.60.0)`` from a ``ClusterInfo``."""

    def count(value: float, unit: str) -> str:
        number = f"{value:g}"
        return f"{number} {unit}" if value == 1 else f"{number} {unit}s"

    return f"{count(info.nodes, 'node')}, {count(info.cpus, 'CPU')}, {count(info.gpus, 'GPU')} (Ray {info.ray_version})"
