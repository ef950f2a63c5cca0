"""Run every benchmark in bench/ and print one table: value, baseline from the same run, ratio, goal.

    .venv/bin/python bench/run_all.py            # --quick (the default here; `make bench` passes --full): small sizes
    .venv/bin/python bench/run_all.py --full     # each benchmark's full size (long: see docs/benchmarks.md)
    .venv/bin/python bench/run_all.py --only reconcile

Each bench/bench_*.py runs in its own process (its human output is shown as it goes), accepts
``--quick``, and ends with ``RESULT {json}`` lines (bench/results.py), or ``SKIP <reason>`` when
something it needs is absent. Exits 1 when a benchmark fails, prints no result, or misses a goal.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


@dataclass
class Outcome:
    script: str
    results: list[dict[str, Any]] = field(default_factory=list)
    skipped: str = ""
    failed: str = ""
    seconds: float = 0.0


def run(script: Path, *, quick: bool) -> Outcome:
    """Run one benchmark, echoing its output, and collect its RESULT and SKIP lines."""
    outcome = Outcome(script.name)
    command = [sys.executable, str(script), *(["--quick"] if quick else [])]
    print(f"\n=== {script.name} {'(quick)' if quick else '(full)'} ===", flush=True)
    started = time.monotonic()
    output = subprocess.PIPE
    with subprocess.Popen(command, cwd=BENCH.parent, stdout=output, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.startswith("RESULT "):
                outcome.results.append(json.loads(line[len("RESULT ") :]))
            elif line.startswith("SKIP "):
                outcome.skipped = line[len("SKIP ") :].strip()
    outcome.seconds = time.monotonic() - started
    if proc.returncode:
        outcome.failed = f"exited with {proc.returncode}"
    elif not outcome.results and not outcome.skipped:
        outcome.failed = "printed no RESULT line"
    return outcome


def verdict(result: dict[str, Any]) -> tuple[str, str]:
    """The goal column and pass/miss ("-" when the benchmark sets no goal)."""
    goal, ratio = result.get("goal_ratio"), result.get("ratio")
    margin = result.get("goal_difference")
    if margin is not None:
        difference = result["value"] - result["baseline"]
        unit = result.get("unit", "")
        if result.get("higher_is_better"):
            return f">= baseline - {margin:g} {unit}", "pass" if difference >= -margin else "MISS"
        return f"<= baseline + {margin:g} {unit}", "pass" if difference <= margin else "MISS"
    if goal is None or ratio is None:
        return "-", "-"
    if result.get("higher_is_better"):
        return f">= {goal:g}x", "pass" if ratio >= goal else "MISS"
    return f"<= {goal:g}x", "pass" if ratio <= goal else "MISS"


def table(outcomes: list[Outcome]) -> tuple[list[str], bool]:
    """The Markdown table, and whether everything ran and met its goals."""
    ok = True
    lines = [
        "| benchmark | measure | value | baseline (same run) | ratio | goal | result |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for outcome in outcomes:
        if outcome.failed or outcome.skipped:
            ok = ok and not outcome.failed
            state = f"FAILED: {outcome.failed}" if outcome.failed else f"skipped: {outcome.skipped}"
            lines.append(f"| {outcome.script} | - | - | - | - | - | {state} |")
            continue
        for r in outcome.results:
            goal, passed = verdict(r)
            ok = ok and passed != "MISS"
            ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-"
            unit = r.get("unit", "")
            lines.append(
                f"| {r['benchmark']} | {r['measure']} | {r['value']:.4g} {unit} | {r['baseline']:.4g} {unit} "
                f"| {ratio} | {goal} | {passed} |"
            )
    return lines, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes (the default)")
    size.add_argument("--full", action="store_true", help="each benchmark's full size")
    parser.add_argument("--only", action="append", default=[], help="run only bench_<NAME>.py (repeatable)")
    args = parser.parse_args()
    scripts = sorted(BENCH.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
        if not scripts:
            parser.error(f"no bench/bench_<name>.py for {', '.join(args.only)}")
    outcomes = [run(script, quick=not args.full) for script in scripts]
    lines, ok = table(outcomes)
    total = sum(o.seconds for o in outcomes)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"\n## make bench ({'full' if args.full else 'quick'} sizes, {when})")
    print("\n".join(lines))
    print(f"\n{len(outcomes)} benchmarks in {total:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
