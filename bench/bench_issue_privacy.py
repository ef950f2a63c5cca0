"""What the privacy check adds to issuing a URL: one package_show with the client's token.

Against the real local CKAN (scripts/local_ckan.py, started if needed), through the service's
own CKAN adapter: the baseline is issuance's permission probe (``resource_patch`` with only
the id); the measured path is the probe plus ``package_show``. Both are timed interleaved in
the same run, for a dataset with few and with many resources (package_show returns them all).

    .venv/bin/python bench/bench_issue_privacy.py [--repeat 30] [--resources 5,30] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import emit  # noqa: E402


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--resources", default="5,30", help="dataset sizes to measure, comma-separated")
    parser.add_argument("--quick", action="store_true", help="a small run (10 rounds), as run_all.py --quick runs it")
    args = parser.parse_args()
    if args.quick:
        args.repeat = min(args.repeat, 10)

    from django.conf import settings

    from tests.support.ckan_site import ensure_local_ckan, make_world

    site = ensure_local_ckan()
    settings.configure(CKAN_URL=site.url, CKAN_TIMEOUT_SECONDS=30, CKAN_API_TOKEN="")
    from uploads import ckan
    from uploads.services import privacy

    world = make_world(site, "bench-privacy")
    token = world.editor.token
    print(f"{'resources':>9} {'probe ms':>9} {'probe+package_show ms':>22} {'ratio':>6}")
    for count in (int(n) for n in args.resources.split(",")):
        dataset = site.create_dataset(world.org["id"], f"bench-{count}", private=False)
        resource_id = ""
        for i in range(count):
            resource_id = site.create_resource(dataset["id"], name=f"r{i}.csv")["id"]

        def probe(rid: str = resource_id) -> object:
            return ckan.authorize_resource_update(rid, token=token)

        def probe_and_privacy(rid: str = resource_id) -> object:
            resource = ckan.authorize_resource_update(rid, token=token)
            return privacy.is_private(ckan.package_show(str(resource["package_id"]), token=token))

        probe()
        probe_and_privacy()
        baseline, measured = [], []
        for _ in range(3):  # interleaved rounds, so load on the machine hits both alike
            baseline.append(median_ms(probe, args.repeat))
            measured.append(median_ms(probe_and_privacy, args.repeat))
        base, with_check = statistics.median(baseline), statistics.median(measured)
        print(f"{count:>9} {base:>9.1f} {with_check:>22.1f} {with_check / base:>6.2f}")
        emit(
            benchmark="issue_privacy",
            measure=f"CKAN checks per issuance, probe + package_show vs probe alone, {count} resources",
            value=with_check,
            baseline=base,
            unit="ms",
        )


if __name__ == "__main__":
    main()
