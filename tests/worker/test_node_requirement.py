"""Without Node the Worker tests skip with the reason; with REQUIRE_NODE=1 (CI) they fail instead."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.processes import ROOT


def run_worker_test_without_node(tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "bin"  # a PATH where neither node nor npm is found
    empty.mkdir(exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if k != "REQUIRE_NODE"}
    # Its own SQLite database: a second pytest must never touch the test database of this one.
    environ.update(PATH=str(empty), DATABASE_URL=f"sqlite:///{tmp_path / 'inner.sqlite3'}", **env)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "tests/worker/test_worker.py",
            "-k",
            "signature",
        ],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.integration
def test_without_node_the_worker_tests_skip_with_the_reason_and_fail_when_required(tmp_path):
    skipped = run_worker_test_without_node(tmp_path)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "1 skipped" in skipped.stdout
    assert "node and npm not found" in skipped.stdout

    required = run_worker_test_without_node(tmp_path, REQUIRE_NODE="1")
    assert required.returncode != 0
    assert "Node is required here (REQUIRE_NODE=1)" in required.stdout
