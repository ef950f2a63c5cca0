"""`manage.py run_qcluster`: a SIGTERM to the cluster's whole process group (systemd's default) stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.dashboard.test_serve_command import alive, group_members
from tests.support.processes import ROOT, child_environ, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def start_cluster(command: str, tmp_path) -> subprocess.Popen[bytes]:
    log_path = tmp_path / f"{command}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), command],
            env=child_environ(),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    # main, sentinel, two workers, monitor and pusher; "running" once the sentinel guards them.
    wait_for(lambda: len(group_members(proc.pid)) >= 6, timeout=60, what=f"{command}'s processes")
    wait_for(lambda: "running." in log_path.read_text(), timeout=60, what=f"{command} to run")
    time.sleep(1)  # the sentinel is now waiting on the stop event between two guard cycles
    return proc


def test_a_sigterm_to_its_whole_group_then_one_more_from_serve_stops_it_within_seconds(tmp_path):
    proc = start_cluster("run_qcluster", tmp_path)
    members = group_members(proc.pid)
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)  # systemd: every process at once
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)  # serve, forwarding its own SIGTERM to the main process
    try:
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - started < 5
    time.sleep(0.5)
    assert [pid for pid in members if alive(pid)] == []
    assert "has stopped." in (tmp_path / "run_qcluster.log").read_text()


def test_the_stock_qcluster_hangs_on_the_same_signal_which_is_why_run_qcluster_exists(tmp_path):
    # Its sentinel dies of the SIGTERM while waiting on the shared stop event; the main process's
    # stop_event.set() then waits for that dead sleeper forever. Should django-q2 fix this, this
    # test fails and run_qcluster can go.
    proc = start_cluster("qcluster", tmp_path)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
