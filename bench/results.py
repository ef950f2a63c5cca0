"""The line every benchmark ends with, for bench/run_all.py: ``RESULT {json}`` (or ``SKIP <reason>``)."""

from __future__ import annotations

import json


def emit(
    *,
    benchmark: str,
    measure: str,
    value: float,
    baseline: float,
    unit: str,
    higher_is_better: bool = False,
    goal_ratio: float | None = None,
    goal_difference: float | None = None,
) -> None:
    """Print one measure with its baseline from the same run (and its goal, if the benchmark has one).

    ``goal_ratio`` bounds value / baseline; ``goal_difference`` bounds value - baseline (in ``unit``),
    for a cost that must stay within an absolute margin of the baseline (below it, or above it
    with ``higher_is_better``).
    """
    record = {
        "benchmark": benchmark,
        "measure": measure,
        "value": value,
        "baseline": baseline,
        "unit": unit,
        "ratio": value / baseline if baseline else None,
        "higher_is_better": higher_is_better,
        "goal_ratio": goal_ratio,
        "goal_difference": goal_difference,
    }
    print("RESULT " + json.dumps(record), flush=True)


def skip(reason: str) -> None:
    """Say why this benchmark cannot run here; run_all shows the reason instead of a number."""
    print(f"SKIP {reason}", flush=True)
