"""``python -m maillab`` and the ``maillab`` command."""

from __future__ import annotations

import sys


def main() -> None:
    # maillab serve is several processes (gunicorn's workers) whose metrics prometheus_client
    # keeps in files in one folder; the library must know it before it is first imported,
    # which maillab.cli does.
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        from maillab.metrics_dir import prepare

        prepare()
    from maillab.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
