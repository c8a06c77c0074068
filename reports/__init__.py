"""Charts and the self-contained HTML report of a run: ``build_report(run_dir)``."""

from reports.build import build_report
from reports.data import ReportError

__all__ = ["ReportError", "build_report"]
