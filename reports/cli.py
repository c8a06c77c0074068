"""``maillab report RUN_DIR``: regenerate a run's charts and report.html."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
def report(run_dir: Path) -> None:
    """Write RUN_DIR/report.html (and RUN_DIR/charts/) from RUN_DIR/results.json."""
    from reports import ReportError, build_report

    try:
        path = build_report(run_dir)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(path))
