from __future__ import annotations

import textwrap

from bench.run_all import run, table
from tests.support.processes import ROOT

HEADER = "import sys; sys.path.insert(0, {root!r})\nfrom bench.results import emit, skip\n"


def script(tmp_path, name: str, body: str):
    path = tmp_path / f"bench_{name}.py"
    path.write_text(HEADER.format(root=str(ROOT)) + textwrap.dedent(body))
    return path


def test_it_collects_results_and_judges_them_against_their_goal(tmp_path):
    path = script(
        tmp_path,
        "fast",
        """
        assert "--quick" in sys.argv
        print("human output stays")
        emit(benchmark="fast", measure="ingest", value=600.0, baseline=1000.0, unit="ev/s",
             higher_is_better=True, goal_ratio=0.5)
        emit(benchmark="fast", measure="latency", value=3.0, baseline=1.0, unit="ms", goal_ratio=2.0)
        """,
    )
    outcome = run(path, quick=True)
    lines, ok = table([outcome])
    assert not ok
    assert "| fast | ingest | 600 ev/s | 1000 ev/s | 0.60x | >= 0.5x | pass |" in lines
    assert "| fast | latency | 3 ms | 1 ms | 3.00x | <= 2x | MISS |" in lines


def test_a_skip_is_shown_with_its_reason_and_is_not_a_failure(tmp_path):
    outcome = run(script(tmp_path, "pg", 'skip("PostgreSQL not usable")\n'), quick=True)
    lines, ok = table([outcome])
    assert ok and lines[-1].endswith("| skipped: PostgreSQL not usable |")


def test_a_benchmark_that_crashes_or_prints_nothing_fails_the_run(tmp_path):
    crashed = run(script(tmp_path, "crash", "raise SystemExit(3)\n"), quick=True)
    silent = run(script(tmp_path, "silent", "print('done')\n"), quick=False)
    lines, ok = table([crashed, silent])
    assert not ok
    assert "FAILED: exited with 3" in lines[-2] and "FAILED: printed no RESULT line" in lines[-1]


def test_an_absolute_difference_goal_is_judged_on_value_minus_baseline(tmp_path):
    path = script(
        tmp_path,
        "overhead",
        """
        emit(benchmark="issue", measure="own", value=1.4, baseline=0.5, unit="ms", goal_difference=1.0)
        emit(benchmark="issue", measure="slow", value=2.0, baseline=0.5, unit="ms", goal_difference=1.0)
        """,
    )
    lines, ok = table([run(path, quick=True)])
    assert not ok
    assert "| issue | own | 1.4 ms | 0.5 ms | 2.80x | <= baseline + 1 ms | pass |" in lines
    assert "| issue | slow | 2 ms | 0.5 ms | 4.00x | <= baseline + 1 ms | MISS |" in lines
