"""Tenants' periodic schedules and the one tenant-aware beat that runs them (DESIGN.md,
"Schedules").

- timing: when a schedule fires (Celery's own crontab, interval grids, clocked one-offs), the DST
  rules and jitter; the API's preview and the beat call the same functions.
- services / selectors / api: the schedule document, its validation and the plan's limits.
- changes: the Redis set of tenants whose schedules changed, which the beat drains.
- occurrences: one occurrence run once (the unique (schedule, due_at) key) with its policies.
- lease and beat: one active beat (a Redis lease) holding every tenant's entries in a heap.
"""
