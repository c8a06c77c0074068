"""Where a multi-process ``maillab serve`` keeps its metrics, set up before anything else.

gunicorn's workers are separate processes; prometheus_client's multiprocess mode has each
write its values to files in ``$PROMETHEUS_MULTIPROC_DIR`` so a scrape can sum them
(apps.core.metrics). The library reads that variable when it is first imported, so the
folder is prepared here, before ``maillab.cli`` (which imports it) is loaded. This module
must import nothing that imports prometheus_client.
"""

from __future__ import annotations

import atexit
import os
import shutil
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare() -> Path | None:
    """An empty folder for this server's metrics, named in the environment: the one given in
    ``$PROMETHEUS_MULTIPROC_DIR`` (wiped: a server starts from zero), else ``metrics-<pid>``
    in the instance folder, removed when the server exits. None if it cannot be made: then
    the instance folder is unusable, and the server's own check of its settings says so in
    one line before anything is served."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
    else:
        instance = Path(os.environ.get("MAILLAB_INSTANCE_DIR", "instance")).resolve()
        folder = instance / f"metrics-{os.getpid()}"
    try:
        # Made private as the app makes its instance folder (it keeps an existing one's mode).
        folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(mode=0o700)
    except OSError:
        return None
    if not given:
        atexit.register(_remove, folder, os.getpid())
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def _remove(folder: Path, owner: int) -> None:
    """Remove the folder when the server exits, and only then: gunicorn's forked workers
    inherit the exit hook, and an old worker leaving after a graceful reload (SIGHUP) would
    otherwise take every live worker's metric files with it (each request that touched a
    gauge then failed with a 500)."""
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)
