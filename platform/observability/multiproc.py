"""Where this process tree's Prometheus values live (prometheus-client's multiprocess mode).

Must run before prometheus_client is first imported: the library picks its value class (memory,
or files in PROMETHEUS_MULTIPROC_DIR) at import. The settings call it first thing; gunicorn's
config (deploy/gunicorn.conf.py) sets the variable in the master, before any worker starts.
A process that finds it unset (a Celery worker, `manage.py`) gets a fresh directory of its own,
which its pool children inherit with the environment and which goes when it exits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

ENV_NAME = "PROMETHEUS_MULTIPROC_DIR"


def multiproc_dir_ensure() -> str:
    existing = os.environ.get(ENV_NAME)
    if existing:
        os.makedirs(existing, exist_ok=True)
        return existing
    created = tempfile.mkdtemp(prefix="saas-metrics-")
    os.environ[ENV_NAME] = created
    owner = os.getpid()

    def remove() -> None:
        # Forked children run atexit handlers too (billiard's exit does): only the creator
        # removes the directory its children write into.
        if os.getpid() == owner:
            shutil.rmtree(created, ignore_errors=True)

    atexit.register(remove)
    return created
