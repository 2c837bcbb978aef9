"""Writes on jobs, one module per topic (imported by name: `from jobs.services.submission ...`).

- submission: validate and accept jobs (one, or a batch all or none), idempotency;
- publishing: hand committed jobs to the broker after commit;
- transitions: every status change, each a conditional UPDATE (claim, succeed, fail, retry,
  cancel, ...);
- reconciliation: the passes that keep accepted work moving when a process or a service failed.
"""
