"""`scripts/drill.py` at a tiny size: it passes on the service as it is, and it fails when something is lost.

Each run starts its own moto, web, qcluster and consumer processes on a database of its own
(a SQLite file, or ``<test database>_drill`` when the tests run on PostgreSQL) with the ORM
broker, against the real local CKAN behind the drill's proxy: every fault of the full drill,
with 3 s outages.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.support.processes import ROOT, current_database_url

pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.timeout(400)]


def drill_database(tmp_path: Path) -> str:
    if connection.vendor == "postgresql":
        return current_database_url() + "_drill"
    return f"sqlite:///{tmp_path / 'drill.sqlite3'}"


def run_drill(tmp_path: Path, *extra: str) -> tuple[int, dict, str]:
    command = [
        sys.executable,
        str(ROOT / "scripts" / "drill.py"),
        *("--uploads", "20", "--resources", "8", "--outage", "3", "--gap", "2", "--settle", "12"),
        *("--claim-timeout", "10", "--broker", "orm", "--database-url", drill_database(tmp_path)),
        *("--work", str(tmp_path / "logs"), "--quiesce-timeout", "180"),
        *extra,
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=380)
    output = done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("TALLY ")]
    assert lines, f"the drill printed no tally (exit {done.returncode}):\n{output[-6000:]}"
    return done.returncode, json.loads(lines[-1][len("TALLY ") :]), output


def test_the_drill_passes_with_nothing_lost(ckan_site, tmp_path):
    code, tally, output = run_drill(tmp_path)
    after, facts = tally["after"], tally["facts"]
    assert code == 0, output[-6000:]
    assert (after["lost"], after["mislinked"], after["stuck"], after["client_errors"]) == (0, 0, 0, 0), output[-6000:]
    assert after["duplicate_links"] == 0
    assert after["resources_with_two_linked_uploads"] == 0
    assert after["resources_ok"] == 8
    # Every upload that was PUT ended linked or superseded by a newer one of its resource.
    assert after["linked"] + after["superseded"] == int(facts["uploads issued / PUT / never PUT"].split(" / ")[1])
    # The faults really happened, and the dropped events were healed (by complete or reconcile).
    assert facts["process starts"] == {"web": 1, "qcluster": 2, "consumer": 2}
    assert (
        "CKAN refused" in facts["faults (s from start)"]
        and "queue endpoint unreachable" in facts["faults (s from start)"]
    )
    assert sum(after["dropped_healed_by"].values()) >= 2
    assert "not yet" not in after["dropped_healed_by"]


def test_the_drill_fails_when_a_resource_is_deleted_behind_the_services_back(ckan_site, tmp_path):
    code, tally, output = run_drill(tmp_path, "--sabotage-delete", "1")
    assert code == 1, output[-6000:]
    assert tally["before"]["lost"] == 0, output[-6000:]
    assert tally["after"]["lost"] == 1
    assert tally["facts"]["sabotaged (deleted in CKAN)"] == 1
    assert "DRILL FAILED" in output
