"""Worker memory after the throughput load: product worker's pool children next to the baseline's.

Memory is only meaningful after the workers have run real load, so this runs the throughput
benchmark (one round by default, to keep it short) and prints the memory half of its report. The
full `python -m bench` samples the same processes after all its rounds instead.

Run alone: `python -m bench.memory [--jobs N] [--rounds R]`.
"""

from __future__ import annotations

from bench.harness import bench_environment, machine_summary
from bench.throughput import arguments, memory_table, run


def main() -> None:
    # One round unless asked otherwise: the figure is memory, not jobs/s.
    args = arguments("Worker memory after the throughput load.", rounds=1)
    with bench_environment() as env:
        report = run(env, jobs=args.jobs, rounds=args.rounds)
        print()
        print(machine_summary())
        print(memory_table(report))


if __name__ == "__main__":
    main()
