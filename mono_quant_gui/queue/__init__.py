"""The batch queue panel: jobs (DESIGN.md §5 job files) run one at a time in the background.

``QueueDock`` is the pane; it owns a ``QueueStore`` (queue.json in the user's
data folder), a ``QueueModel`` (the table) and a ``QueueRunner`` (its own
worker thread calling ``mono_quant_core.jobs.run_job``).  See docs/queue.md.
"""

from __future__ import annotations

from mono_quant_gui.queue.dock import QueueDock
from mono_quant_gui.queue.entry import CANCELLED, DONE, FAILED, QUEUED, RUNNING, STATUSES, QueueEntry
from mono_quant_gui.queue.from_checkpoints import jobs_from_checkpoints
from mono_quant_gui.queue.model import QueueModel
from mono_quant_gui.queue.output_claims import OutputBusy, claimed
from mono_quant_gui.queue.runner import QueueRunner
from mono_quant_gui.queue.store import QueueStore, QueueStoreError, default_queue_path

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "QUEUED",
    "RUNNING",
    "STATUSES",
    "OutputBusy",
    "QueueDock",
    "QueueEntry",
    "QueueModel",
    "QueueRunner",
    "QueueStore",
    "QueueStoreError",
    "claimed",
    "default_queue_path",
    "jobs_from_checkpoints",
]
