"""Where the queue runs its jobs: this computer (the default, one job at a time) or a Ray cluster.

A :class:`QueueTarget` is what Preferences → Queue saves and what the queue
reads when it starts the next job.  It is Qt-free and knows nothing of Ray;
the cluster itself is reached through ``mono_quant_core.cluster`` in the
queue's worker threads only (``import ray`` never runs on the GUI's start path).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The address the Preferences field suggests: the Ray cluster this computer is part of (``ray start``).
DEFAULT_ADDRESS = "auto"
#: The most jobs the concurrency setting allows at once.
MAX_CONCURRENCY = 256


@dataclass(frozen=True)
class QueueTarget:
    """``remote``: run on the Ray cluster at ``address``; ``concurrency``: jobs at once, 0 = the cluster's
    free CPUs / GPUs (``RayCluster.default_concurrency``)."""

    remote: bool = False
    address: str = DEFAULT_ADDRESS
    concurrency: int = 0

    @property
    def cluster_address(self) -> str | None:
        """The address the queue connects to, or None when it runs jobs on this computer."""
        return (self.address.strip() or DEFAULT_ADDRESS) if self.remote else None

    def describe(self) -> str:
        """``this computer`` or ``the Ray cluster at ray://head:10001`` (for the pane and messages)."""
        address = self.cluster_address
        return "this computer" if address is None else f"the Ray cluster at {address}"


LOCAL = QueueTarget()
