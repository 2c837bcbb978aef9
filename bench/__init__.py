"""Benchmarks that print figures (never assert timings): `make bench` or `python -m bench`.

`python -m bench` runs tenant creation, throughput and worker memory, then prints one table.
Each is also runnable alone: `python -m bench.throughput`, `python -m bench.memory`,
`python -m bench.tenant_create`. Two diagnostics explain the throughput figures and are not part
of the default run: `python -m bench.queries` (statements, transactions and WAL per job, from a
private PostgreSQL's statement log) and `python -m bench.variants` (jobs/s of the product worker
with suggested settings changes, bench.variant_settings).

They create and drop their own databases and Redis keys, on the servers named by DATABASE_URL /
REDIS_URL, or on embedded servers started for the run (bench.harness).

Nothing here imports Django at module level: the settings read DATABASE_URL when first imported,
so the harness must point it at the benchmark's own database before anything touches them.
"""
