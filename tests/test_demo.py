"""`make bench` (for now `maillab demo`): real processes, one sign-up per variant."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from maillab.cli import cli
from maillab.demo import run_demo


@pytest.mark.slow
def test_demo_signs_up_once_per_variant(tmp_path: Path) -> None:
    rows = {row.variant: row for row in run_demo("200ms", tmp_path, say=lambda _m: None)}
    assert set(rows) == {"baseline", "sync", "threaded", "queued"}
    assert all(row.register_status == 202 for row in rows.values())
    assert rows["baseline"].time_to_inbox_ms is None
    for variant in ("sync", "threaded", "queued"):
        assert rows[variant].verify_status == 200, rows[variant]
        assert rows[variant].time_to_inbox_ms is not None
        assert rows[variant].time_to_inbox_ms >= 200
    # Sync waited for the 200 ms server inside the request; the fact is ordering, not speed.
    assert rows["sync"].register_ms >= 200
    assert (tmp_path / "demo.json").exists()


def test_demo_rejects_a_bad_latency(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--latency", "fast", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "--latency" in result.output
    assert not (tmp_path / "x").exists()
