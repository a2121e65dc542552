"""Run queued jobs, and sensitivity's per-layer evaluations, on a Ray cluster (the ``[cluster]`` extra).

Qt-free and cheap to import: ray is imported only when a cluster is tested or
connected to, so this module works without ray installed (a ClusterError then
says how to install it).  docs/queue.md, "Running on a Ray cluster", explains
the design: each job is a Ray task running the same ``run_job`` as the local
queue, its progress comes back through a small actor, its inputs are read on a
shared filesystem or shipped through the object store, and its output is written
atomically on the caller's side.
"""

from __future__ import annotations

from ..errors import ClusterError
from .connection import ClusterInfo, check_address, check_cluster
from .runner import RayCluster
from .sweep import sensitivity_on

__all__ = ["ClusterError", "ClusterInfo", "RayCluster", "check_address", "check_cluster", "sensitivity_on"]
