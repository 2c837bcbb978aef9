"""`job_stop`: the worker's side of a cancel (jobs.services.transitions.job_cancel).

A Celery remote-control command, broadcast to every worker, in place of Celery's own `revoke`:

- the task id joins the worker's revoked set, so a message not yet started is dropped when it
  arrives (as `revoke` does; the runner's claim would refuse it anyway);
- with `terminate`, a worker whose pool can kill a job's process (prefork) and is running the task
  terminates that process with SIGTERM. Celery then records the task revoked and acknowledges
  its message, so neither acks_late nor reject_on_worker_lost delivers it again, and the pool
  starts a new process. Pools that cannot (threads, solo) leave the job to stop itself at its
  next progress report (jobs.catalogue.JobCancelled), where Celery's `revoke(terminate=True)`
  would raise NotImplementedError and log an error in every such worker.

`revoke` also asks the results backend, for each task not running there, whether it has a state
to mark revoked: from the worker's main process, with no tenant active. `job_stop` leaves the
results alone; the cancel's own statement has recorded the job and its attempt.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from celery.concurrency.base import BasePool
from celery.worker import state as worker_state
from celery.worker.control import control_command

logger = logging.getLogger(__name__)

JOB_STOP = "job_stop"


def pool_can_terminate(pool: Any) -> bool:
    """Whether the pool kills a job's process on request (prefork, eventlet, gevent)."""
    # Prefork binds billiard's terminate_job on the instance when the pool starts; threads and
    # solo keep BasePool's, which raises NotImplementedError.
    return getattr(pool.terminate_job, "__func__", None) is not BasePool.terminate_job


@control_command(
    args=[("task_id", str), ("terminate", bool)],
    signature="<task_id> [terminate]",
)
def job_stop(state: Any, task_id: str, terminate: bool = False, **kwargs: Any) -> dict[str, str]:
    worker_state.revoked.add(task_id)
    if not terminate:
        return {"ok": "revoked"}
    pool = state.consumer.pool
    for request in list(worker_state.active_requests):
        if request.id != task_id:
            continue
        if not pool_can_terminate(pool):
            return {"ok": "running: stops at its next progress report"}
        logger.info("job_stop: terminating the process running %s", task_id)
        request.terminate(pool, signal=signal.SIGTERM)
        return {"ok": "terminated"}
    return {"ok": "revoked"}
