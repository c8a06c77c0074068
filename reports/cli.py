"""``maillab report RUN_DIR``: regenerate a run's charts and report.html."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--history", "history_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Show the run against this history of runs [default: the one "
                                 "its gate judged it against, if any].")
def report(run_dir: Path, history_dir: Path | None) -> None:
    """Write RUN_DIR/report.html (and RUN_DIR/charts/) from RUN_DIR/results.json."""
    from loadtests.history import HistoryError
    from reports import ReportError, build_report

    try:
        path = build_report(run_dir, history_dir)
    except (ReportError, HistoryError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(path))
