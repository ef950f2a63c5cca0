"""The fault drill: many uploads through the real service while its parts fail, then a tally against the truth.

    .venv/bin/python scripts/drill.py                 # `make drill`: 1,000 uploads, 30 s outages (about 10 min)
    .venv/bin/python scripts/drill.py --quick         # ~100 uploads, 5 s outages (about 2 min)
    .venv/bin/python scripts/drill.py --uploads 20 --resources 8 --outage 3 --gap 2

Real parts: a moto S3+SQS server process (the bucket's event notifications go to an inbox
queue; the drill's forwarder moves them to the service's queue, delivering every event twice,
holding back a tenth so they arrive out of order, dropping a few and adding junk messages), the
real local CKAN behind a TCP proxy the drill controls, the web app under gunicorn, `run_qcluster`
and `consume_sqs` as processes, on PostgreSQL (database ``ckanrec_drill``, dropped and created
afresh) with the Redis broker (``redis://127.0.0.1:6379/5``, flushed).

While the uploads run, on a timeline: qcluster SIGKILLed (whole process group) and restarted;
CKAN refused (proxy closed); the consumer SIGKILLed and restarted; CKAN hung (proxy accepts and
forwards nothing); the queue endpoint unreachable (a proxy in front of moto's SQS, for the
consumer). Clients: some only PUT, some call ``complete`` after the PUT, some before it (409)
and again after, some never PUT.

Ground truth, per resource: the latest object the drill PUT (newest Last-Modified as the bucket
reports it, then the later issuance: the service's own "newest wins" rule). At the end (once
the ledger is quiet) the drill compares CKAN's url and size with it, runs
``manage.py reconcile --fix``, waits again, and compares again. It exits 1 when anything is
lost or mislinked after reconcile, 2 when the drill itself could not run.

A dropped event is healed by ``complete`` when the client calls it; otherwise by the sweep
(when it HEADs uploads still ``issued``) or by the reconciliation (``unevented`` → linked). The
tally says which, per dropped event, from the trigger of the upload's first link attempt.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.support.ckan_site import CkanActionError, CkanSite, CkanUnavailable, ensure_local_ckan  # noqa: E402
from tests.support.live_service import BUCKET, ApiClient, LiveService, make_resources  # noqa: E402

console = Console(highlight=False)
TERMINAL = {"linked", "superseded", "failed"}
JUNK = [
    "this is not json",
    '{"hello": "world"}',
    '{"Records": [{"eventName": "ObjectCreated:Put"}]}',
    '{"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "ckan-uploads"}',
    '{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "eventTime": "2026-01-01T00:00:00Z",'
    ' "s3": {"bucket": {"name": "ckan-uploads"}, "object": {"key": "resources/api_uploads/nobody/x.csv",'
    ' "size": 3, "eTag": "abc"}}}]}',
]


@dataclass
class Slot:
    """One planned upload: what its client does and what the drill did to its event."""

    resource_id: str
    seq: int  # order among the uploads of its resource (they are issued one after another)
    behaviour: str  # event_only | complete_after | complete_before | never_put
    drop: bool
    upload_id: str = ""
    key: str = ""
    size: int = 0
    last_modified: datetime | None = None
    put_at: float = 0.0  # wall clock (time.time) when the PUT returned
    complete_codes: list[int] = field(default_factory=list)
    error: str = ""

    @property
    def put(self) -> bool:
        return self.behaviour != "never_put" and bool(self.key) and self.last_modified is not None


@dataclass
class Fault:
    name: str
    started: float = 0.0
    ended: float = 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~100 uploads over 40 resources, 5 s outages")
    parser.add_argument("--uploads", type=int, help="uploads issued (default 1000; quick 100)")
    parser.add_argument("--resources", type=int, help="CKAN resources they go to (default 400; quick 40)")
    parser.add_argument("--outage", type=float, help="seconds of each outage: CKAN refused, hung, queue (default 30)")
    parser.add_argument("--gap", type=float, help="seconds between faults (default 15; quick 4)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--drop", type=float, default=0.02, help="fraction of events dropped (default 0.02)")
    parser.add_argument("--reorder", type=float, default=0.1, help="fraction of deliveries held back (default 0.1)")
    parser.add_argument("--never-put", type=float, default=0.05, help="fraction of clients that never PUT")
    parser.add_argument("--broker", choices=("redis", "orm"), default="redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5")
    parser.add_argument(
        "--database-url",
        default="postgres://ckanrec:ckanrec@127.0.0.1:5432/ckanrec_drill",
        help="dropped and created afresh (a sqlite:///FILE is deleted)",
    )
    parser.add_argument("--claim-timeout", type=int, help="LINK_CLAIM_TIMEOUT_SECONDS (default: the service's)")
    parser.add_argument("--settle", type=float, help="quiet seconds that count as quiescence (default 90; quick 30)")
    parser.add_argument("--quiesce-timeout", type=float, default=900, help="give up waiting after this (s)")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--work", type=Path, help="directory for the processes' logs (default: a temp dir)")
    parser.add_argument(
        "--sabotage-delete",
        type=int,
        default=0,
        metavar="N",
        help="delete N linked CKAN resources behind the service's back before reconcile (the drill must fail)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.uploads = args.uploads or (100 if quick else 1000)
    args.resources = args.resources or (40 if quick else 400)
    args.outage = args.outage if args.outage is not None else (5.0 if quick else 30.0)
    args.gap = args.gap if args.gap is not None else (4.0 if quick else 15.0)
    args.settle = args.settle if args.settle is not None else (30.0 if quick else 90.0)
    args.resources = min(args.resources, args.uploads)
    if args.uploads > 3 * args.resources:
        parser.error("at most three uploads per resource: raise --resources")
    return args


def plan(args: argparse.Namespace, resource_ids: list[str], rng: random.Random) -> list[list[Slot]]:
    """Per resource, its uploads (1 to 3, back to back), each with a client behaviour and a drop flag."""
    counts = [1] * len(resource_ids)
    extra = args.uploads - len(resource_ids)
    while extra > 0:
        i = rng.randrange(len(counts))
        if counts[i] < 3:
            counts[i] += 1
            extra -= 1
    jobs = []
    behaviours = ["event_only", "complete_after", "complete_before", "never_put"]
    weights = [0.4, 0.4 - args.never_put, 0.2, args.never_put]
    for resource_id, count in zip(resource_ids, counts, strict=True):
        jobs.append(
            [
                Slot(resource_id, seq, rng.choices(behaviours, weights)[0], drop=rng.random() < args.drop)
                for seq in range(count)
            ]
        )
    flat = [s for job in jobs for s in job if s.behaviour != "never_put"]
    # At least one dropped event with and one without a complete call, so that both heals are shown.
    for behaviour in ("event_only", "complete_after"):
        if not any(s.drop and s.behaviour == behaviour for s in flat):
            candidates = [s for s in flat if s.behaviour == behaviour]
            if candidates:
                rng.choice(candidates).drop = True
    return jobs


class Forwarder(threading.Thread):
    """Bucket notifications from the inbox queue to the service's queue: twice each, some late, some never."""

    def __init__(self, service: LiveService, by_key: dict[str, Slot], args: argparse.Namespace, rng: random.Random):
        super().__init__(daemon=True)
        self.sqs = service.client("sqs")
        self.inbox, self.target = service.inbox_queue_url, service.events_queue_url
        self.by_key, self.args, self.rng = by_key, args, rng
        self.stopping = threading.Event()
        self.held: list[tuple[float, int, str]] = []
        self.counts: Counter[str] = Counter()
        self._n = 0

    def send(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.target, MessageBody=body)
        self.counts["sent"] += 1

    def deliver(self, body: str) -> None:
        for _ in range(2):
            if self.rng.random() < self.args.reorder:
                self._n += 1
                heapq.heappush(self.held, (time.monotonic() + self.rng.uniform(1, 6), self._n, body))
                self.counts["held back"] += 1
            else:
                self.send(body)
        self.counts["events"] += 1
        if self.counts["events"] % 25 == 1:
            self.send(self.rng.choice(JUNK))
            self.counts["junk"] += 1

    def run(self) -> None:
        while not (self.stopping.is_set() and not self.held):
            while self.held and self.held[0][0] <= time.monotonic():
                self.send(heapq.heappop(self.held)[2])
            got = self.sqs.receive_message(QueueUrl=self.inbox, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for message in got.get("Messages", []):
                body = message["Body"]
                try:
                    records = json.loads(body).get("Records", [])
                    key = unquote_plus(records[0]["s3"]["object"]["key"]) if records else ""
                except (ValueError, KeyError, IndexError, AttributeError):
                    key = ""
                slot = self.by_key.get(key)
                if slot is not None and slot.drop:
                    self.counts["dropped"] += 1
                elif key:
                    self.deliver(body)
                else:
                    self.send(body)  # moto's s3:TestEvent: passed on once
                self.sqs.delete_message(QueueUrl=self.inbox, ReceiptHandle=message["ReceiptHandle"])


def run_faults(service: LiveService, args: argparse.Namespace, faults: list[Fault], t0: float) -> None:
    """The timeline: kill qcluster, refuse CKAN, kill the consumer, hang CKAN, cut the queue."""

    def at(offset: float) -> None:
        time.sleep(max(0.0, t0 + offset - time.monotonic()))

    def outage(name: str, begin: Any, end: Any) -> None:
        fault = Fault(name, started=time.monotonic() - t0)
        faults.append(fault)
        begin()
        time.sleep(args.outage)
        end()
        fault.ended = time.monotonic() - t0

    def kill(name: str) -> None:
        fault = Fault(f"{name} SIGKILLed, restarted 2 s later", started=time.monotonic() - t0)
        faults.append(fault)
        service.procs[name].kill()
        time.sleep(2)
        service.procs[name].start()
        fault.ended = time.monotonic() - t0

    g, d = args.gap, args.outage
    at(g)
    kill("qcluster")
    at(2 * g)
    outage("CKAN refused", service.ckan_proxy.stop, service.ckan_proxy.start)
    at(3 * g + d)
    kill("consumer")
    at(4 * g + d)
    outage("CKAN hung", service.ckan_proxy.hold, service.ckan_proxy.release)
    at(5 * g + 2 * d)
    outage("queue endpoint unreachable", service.queue_proxy.stop, service.queue_proxy.start)
    at(6 * g + 3 * d)


def run_client(job: list[Slot], api: ApiClient, s3: Any, bucket: str, by_key: dict[str, Slot]) -> None:
    """One client uploading its resource's files one after another."""
    for slot in job:
        try:
            data = f"resource,seq,nonce\n{slot.resource_id},{slot.seq},{random.random()}\n".encode()
            issued = api.issue(slot.resource_id, filename=f"drill-{slot.seq}.csv", data=data)
            slot.upload_id, slot.key, slot.size = str(issued["upload_id"]), issued["key"], len(data)
            by_key[slot.key] = slot
            if slot.behaviour == "never_put":
                continue
            if slot.behaviour == "complete_before":
                slot.complete_codes.append(api.complete(issued))
            api.put(issued, data)
            slot.put_at = time.time()
            slot.last_modified = s3.head_object(Bucket=bucket, Key=slot.key)["LastModified"]
            if slot.behaviour in ("complete_after", "complete_before"):
                slot.complete_codes.append(api.complete(issued))
        except Exception as exc:
            slot.error = f"{type(exc).__name__}: {exc}"[:300]


def advance(progress: Progress, task: Any, count: int, _future: object) -> None:
    progress.advance(task, count)


def ledger_states() -> dict[str, tuple[str, bool]]:
    from uploads.models import Upload

    return {
        str(pk): (state, claim is not None)
        for pk, state, claim in Upload.objects.values_list("pk", "state", "claim_token")
    }


def wait_quiet(slots: list[Slot], args: argparse.Namespace, progress: Progress, label: str) -> tuple[float, bool]:
    """Wait until every PUT upload has ended, or nothing moved for ``--settle`` seconds.

    Returns the monotonic time of the last change seen and whether every PUT upload ended.
    """
    put_ids = [s.upload_id for s in slots if s.put]
    task = progress.add_task(label, total=len(put_ids))
    last, last_change = None, time.monotonic()
    deadline = time.monotonic() + args.quiesce_timeout
    while True:
        states = ledger_states()
        done = sum(1 for i in put_ids if states.get(i, ("", False))[0] in TERMINAL)
        busy = any(states.get(i, ("", False))[0] == "uploaded" or states.get(i, ("", True))[1] for i in put_ids)
        progress.update(task, completed=done)
        if states != last:
            last, last_change = states, time.monotonic()
        if done == len(put_ids):
            return last_change, True
        if not busy and time.monotonic() - last_change >= args.settle:
            return last_change, False
        if time.monotonic() > deadline:
            return last_change, False
        time.sleep(1)


def show_resource(site: CkanSite, resource_id: str) -> dict[str, Any] | None:
    """CKAN's record as the drill reads it (directly, not through the proxy); None when it is gone."""
    for attempt in range(5):
        try:
            resource = site.resource_show(resource_id)
        except CkanActionError as exc:
            if exc.status == 404:
                return None
            raise
        except requests.RequestException:  # the local CKAN is shared: a reset connection is tried again
            if attempt == 4:
                raise
            time.sleep(2)
            continue
        return None if resource.get("state") == "deleted" else resource
    raise AssertionError("unreachable")


def tally(site: CkanSite, jobs: list[list[Slot]], originals: dict[str, str]) -> dict[str, Any]:
    """Compare CKAN and the ledger with the ground truth."""
    from django.db.models import Count

    from uploads import storage
    from uploads.models import LinkAttempt, Upload

    uploads = {str(u.pk): u for u in Upload.objects.all()}
    with ThreadPoolExecutor(4) as pool:
        shown = dict(zip(originals, pool.map(lambda rid: show_resource(site, rid), originals), strict=True))
    counts: Counter[str] = Counter()
    problems: list[str] = []
    for job in jobs:
        resource_id = job[0].resource_id
        resource = shown[resource_id]
        put = [s for s in job if s.put]
        ours = {storage.public_url(s.key) for s in job if s.key}
        if put:
            truth = max(put, key=lambda s: (s.last_modified, s.seq))
            expected_url, expected_size = storage.public_url(truth.key), truth.size
        else:
            expected_url, expected_size = originals[resource_id], None
        truth_upload = uploads.get(truth.upload_id) if put else None
        if truth_upload is not None and truth_upload.state not in TERMINAL:
            # The latest object has not ended yet (its event was dropped, say): not a wrong link.
            counts["resources waiting"] += 1
            problems.append(f"waiting: resource {resource_id}: its latest upload is {truth_upload.state}")
        elif resource is None:
            counts["lost"] += 1
            problems.append(f"lost: resource {resource_id} is gone from CKAN")
        elif resource["url"] == expected_url and (
            expected_size is None or int(resource.get("size") or -1) == expected_size
        ):
            counts["resources ok"] += 1
        elif resource["url"] in ours or (put and resource["url"] != originals[resource_id]):
            counts["mislinked"] += 1
            problems.append(f"mislinked: resource {resource_id} shows {resource['url']} (size {resource.get('size')})")
        else:
            counts["lost"] += 1
            problems.append(f"lost: resource {resource_id} still shows {resource['url']}")
        linked = [s for s in job if s.upload_id and uploads.get(s.upload_id) and uploads[s.upload_id].state == "linked"]
        if len(linked) > 1:
            counts["resources with two linked uploads"] += 1
        for slot in job:
            upload = uploads.get(slot.upload_id)
            if upload is None:
                if slot.behaviour != "never_put":
                    counts["client errors"] += 1
                    problems.append(f"client error on resource {resource_id}: {slot.error}")
                continue
            if not slot.put:
                counts[f"never PUT, {upload.state}"] += 1
                if upload.state in ("linked", "uploaded", "superseded"):
                    counts["mislinked"] += 1
                    problems.append(f"mislinked: upload {upload.pk} was never PUT but is {upload.state}")
                continue
            state = upload.state if upload.state in TERMINAL else "stuck"
            counts[f"uploads {state}"] += 1
            if state == "stuck":
                problems.append(f"stuck: upload {upload.pk} is {upload.state} ({upload.last_error[:120]})")
    duplicates = (
        LinkAttempt.objects.filter(outcome="linked").values("upload").annotate(n=Count("id")).filter(n__gt=1).count()
    )
    counts["duplicate links"] = duplicates
    first_trigger = {
        str(upload_id): trigger
        for upload_id, trigger in LinkAttempt.objects.order_by("-started_at").values_list("upload_id", "trigger")
    }
    healed: Counter[str] = Counter()
    for slot in (s for job in jobs for s in job if s.drop and s.put):
        upload = uploads.get(slot.upload_id)
        if upload is None or upload.state not in ("linked", "superseded"):
            healed["not yet"] += 1
        elif 202 in slot.complete_codes:
            healed["complete"] += 1  # no event ever came: the client's complete moved it
        else:
            healed[first_trigger.get(slot.upload_id, "?")] += 1  # sweep or reconcile
    latencies = [
        (uploads[s.upload_id].linked_at.timestamp() - s.put_at)  # type: ignore[union-attr]
        for job in jobs
        for s in job
        if s.put and s.upload_id in uploads and uploads[s.upload_id].linked_at is not None
    ]
    return {"counts": counts, "problems": problems, "dropped_healed_by": healed, "latencies": latencies}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, result: dict[str, Any]) -> dict[str, Any]:
    c = result["counts"]
    return {
        "phase": name,
        "resources_ok": c["resources ok"],
        "resources_waiting": c["resources waiting"],
        "lost": c["lost"] + (c["uploads stuck"] if name == "after reconcile" else 0),
        "mislinked": c["mislinked"],
        "stuck": c["uploads stuck"],
        "failed": c["uploads failed"],
        "linked": c["uploads linked"],
        "superseded": c["uploads superseded"],
        "duplicate_links": c["duplicate links"],
        "resources_with_two_linked_uploads": c["resources with two linked uploads"],
        "client_errors": c["client errors"],
        "dropped_healed_by": dict(result["dropped_healed_by"]),
    }


def print_tally(before: dict[str, Any], after: dict[str, Any], facts: dict[str, Any]) -> None:
    table = Table(title="Drill tally against the ground truth")
    table.add_column("measure")
    table.add_column("before reconcile", justify="right")
    table.add_column("after reconcile", justify="right")
    for key in before:
        if key == "phase":
            continue
        table.add_row(key.replace("_", " "), str(before[key]), str(after[key]))
    console.print(table)
    facts_table = Table(title="The run")
    facts_table.add_column("what")
    facts_table.add_column("value", justify="right")
    for key, value in facts.items():
        facts_table.add_row(key, str(value))
    console.print(facts_table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    try:
        site = ensure_local_ckan()
    except CkanUnavailable as exc:
        console.print(f"[red]no local CKAN: {exc}[/] (make ckan)")
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="ckanrec-drill-"))
    work.mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(UTC)
    console.print(
        f"drill: {args.uploads} uploads over {args.resources} resources, outages {args.outage:g} s, "
        f"broker {args.broker}, database {args.database_url.split('@')[-1]}, logs in {work}"
    )
    with console.status("creating CKAN resources"):
        editor_token, originals = make_resources(site, args.resources, "drill")
    extra_env = {
        "LINK_RETRY_BASE_SECONDS": "2",
        "LINK_RETRY_MAX_SECONDS": "10",
        "LINK_MAX_ATTEMPTS": "30",
        "CKAN_TIMEOUT_SECONDS": "5",
        "CONSUMER_BACKOFF_MAX_SECONDS": "5",
    }
    if args.claim_timeout:
        extra_env["LINK_CLAIM_TIMEOUT_SECONDS"] = str(args.claim_timeout)
    service = LiveService(
        work=work,
        database_url=args.database_url,
        ckan_url=site.url,
        ckan_token=site.sysadmin_token,
        redis_url=args.redis_url if args.broker == "redis" else "",
        forwarder=True,
        extra_env=extra_env,
    )
    try:
        with console.status("starting moto, the database, web, qcluster and the consumer"):
            service.start()
        os.environ.update({**service.django_environ(), "LOG_LEVEL": "WARNING"})  # the drill's own Django
        import django

        django.setup()
        return drill(args, rng, site, service, editor_token, originals, started_at)
    except Exception:
        for proc in service.procs.values():
            console.print(f"--- {proc.name} log (tail) ---\n{proc.tail()}")
        raise
    finally:
        service.close()


def drill(
    args: argparse.Namespace,
    rng: random.Random,
    site: CkanSite,
    service: LiveService,
    editor_token: str,
    originals: dict[str, str],
    started_at: datetime,
) -> int:
    jobs = plan(args, list(originals), rng)
    rng.shuffle(jobs)
    slots = [s for job in jobs for s in job]
    by_key: dict[str, Slot] = {}
    forwarder = Forwarder(service, by_key, args, rng)
    forwarder.start()
    faults: list[Fault] = []
    timeline = 6 * args.gap + 3 * args.outage
    t0 = time.monotonic()
    fault_thread = threading.Thread(target=run_faults, args=(service, args, faults, t0), daemon=True)
    fault_thread.start()
    s3 = service.client("s3")
    api_clients = [ApiClient(service.web_url, editor_token) for _ in range(args.clients)]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        put_task = progress.add_task("uploads (issue, PUT, complete)", total=len(slots))
        with ThreadPoolExecutor(args.clients) as pool:
            futures = []
            for n, job in enumerate(jobs):
                # Paced over the fault timeline, so that every fault meets uploads in flight.
                time.sleep(max(0.0, t0 + n * timeline / len(jobs) - time.monotonic()))
                api = api_clients[n % len(api_clients)]
                future = pool.submit(run_client, job, api, s3, BUCKET, by_key)
                future.add_done_callback(partial(advance, progress, put_task, len(job)))
                futures.append(future)
            for future in futures:
                future.result()
        fault_thread.join()
        load_ended = time.monotonic()
        console.print(f"uploads and faults done in {load_ended - t0:.0f} s; waiting for the ledger to be quiet")
        last_change, all_ended = wait_quiet(slots, args, progress, "PUT uploads ended (linked/superseded/failed)")
        quiescence = max(0.0, last_change - load_ended)
        forwarder.stopping.set()
        forwarder.join(timeout=30)
        before = tally(site, jobs, originals)
        sabotaged = sabotage(site, jobs, args.sabotage_delete, rng) if args.sabotage_delete else []
        console.print("running manage.py reconcile --fix")
        reconcile_started = time.monotonic()
        done = service.run_manage("reconcile", "--fix", env={"LOG_LEVEL": "WARNING"})
        reconcile_seconds = time.monotonic() - reconcile_started
        console.print(done.stdout[-4000:] + done.stderr[-2000:])
        if done.returncode:
            raise RuntimeError(f"manage.py reconcile --fix exited {done.returncode}")
        heal_change, _ = wait_quiet(slots, args, progress, "after reconcile: PUT uploads ended")
        heal_seconds = max(0.0, heal_change - reconcile_started)
    after = tally(site, jobs, originals)
    lat = before["latencies"]
    completes = Counter(code for s in slots for code in s.complete_codes)
    facts = {
        "date (UTC)": started_at.strftime("%Y-%m-%d %H:%M"),
        "uploads issued / PUT / never PUT": (
            f"{sum(1 for s in slots if s.upload_id)} / {sum(1 for s in slots if s.put)} / "
            f"{sum(1 for s in slots if s.behaviour == 'never_put')}"
        ),
        "resources (with 2 / 3 uploads)": (
            f"{len(jobs)} ({sum(1 for j in jobs if len(j) == 2)} / {sum(1 for j in jobs if len(j) == 3)})"
        ),
        "clients: event only / complete after / complete before and after": (
            f"{sum(1 for s in slots if s.behaviour == 'event_only')} / "
            f"{sum(1 for s in slots if s.behaviour == 'complete_after')} / "
            f"{sum(1 for s in slots if s.behaviour == 'complete_before')}"
        ),
        "complete answers": dict(completes),
        "client retries (5xx, refused)": sum(a.retries for a in api_clients),
        "events forwarded / copies sent / held back / dropped / junk": (
            f"{forwarder.counts['events']} / {forwarder.counts['sent']} / {forwarder.counts['held back']} / "
            f"{forwarder.counts['dropped']} / {forwarder.counts['junk']}"
        ),
        "faults (s from start)": "; ".join(f"{f.name} {f.started:.0f}-{f.ended:.0f}" for f in faults),
        "process starts": {name: p.starts for name, p in service.procs.items()},
        "time to quiescence after load (s)": f"{quiescence:.0f}" + ("" if all_ended else " (some still waiting)"),
        "reconcile --fix: run / until the ledger is quiet (s)": f"{reconcile_seconds:.0f} / {heal_seconds:.0f}",
        "PUT -> linked p50 / p95 / max (s)": (
            f"{statistics.median(lat) if lat else 0:.2f} / {percentile(lat, 0.95):.2f} / {max(lat, default=0):.2f}"
        ),
        "sabotaged (deleted in CKAN)": len(sabotaged),
    }
    tally_before, tally_after = summary("before reconcile", before), summary("after reconcile", after)
    print_tally(tally_before, tally_after, facts)
    for name, result in (("before reconcile", before), ("after reconcile", after)):
        for problem in result["problems"][:20]:
            console.print(f"  [yellow]{name}: {problem}[/]")
    failed = tally_after["lost"] or tally_after["mislinked"] or tally_after["resources_waiting"]
    print(
        "TALLY " + json.dumps({"before": tally_before, "after": tally_after, "facts": facts}, default=str), flush=True
    )
    console.print("[red]DRILL FAILED: something is lost or mislinked[/]" if failed else "[green]drill passed[/]")
    return 1 if failed else 0


def sabotage(site: CkanSite, jobs: list[list[Slot]], count: int, rng: random.Random) -> list[str]:
    """Delete linked resources in CKAN behind the service's back: a real loss the drill must report."""
    candidates = [job[0].resource_id for job in jobs if any(s.put for s in job)]
    victims = rng.sample(candidates, min(count, len(candidates)))
    for resource_id in victims:
        site.action("resource_delete", id=resource_id)
    console.print(f"[yellow]sabotage: deleted {len(victims)} CKAN resource(s) behind the service's back[/]")
    return victims


def run() -> int:
    """main(), with a failure of the drill itself (not of the service) as exit code 2."""
    try:
        return main()
    except KeyboardInterrupt:
        return 2
    except Exception:
        console.print_exception(max_frames=6)
        console.print("[red]the drill could not run to the end[/]")
        return 2


if __name__ == "__main__":
    sys.exit(run())
