"""Throughput of one large upload through the service and ckan-upload, against boto3 upload_file.

Usage: .venv/bin/python bench/bench_large_upload.py [--size 3G | --quick] [--jobs 4] [--repeat 1] [--dir /tmp]

What runs, all on this machine and all real: a moto S3 server in its own process, the service
under gunicorn (a temporary SQLite ledger, storage pointing at moto, CKAN_URL at the local CKAN
of scripts/local_ckan.py, started if needed), and the client as its own process:
`ckan-upload FILE --resource ID --multipart --jobs N` (issue, presigned parts in parallel,
complete). The baseline, measured in the same run against the same moto: boto3's
`upload_file` of the same file with a TransferConfig of the same part size (the one the service
planned) and the same concurrency; over --repeat rounds the two take turns going first, and
the medians are compared. moto and the two uploaders each get their own process, so neither
side shares a GIL with the server. Prints both throughputs, the ratio, the client's phases,
and a `RESULT {json}` line (bench/results.py), or `SKIP <reason>` without a CKAN or the disk.
The generated file needs --size of free space in --dir, and moto spools each object to disk
too; each object is deleted once measured. --quick (`make bench BENCH_ARGS=--quick`) checks
that it runs. The default, 3 GiB, is the largest file both sides finished with moto on this
machine type (24 GiB): moto assembles a completed upload in memory, and at 6 GiB the kernel
killed it (docs/benchmarks.md); above 5 GiB end to end needs R2, S3 or a store that streams.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import boto3
import requests
from boto3.s3.transfer import TransferConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import emit, skip  # noqa: E402
from tests.support.ckan_site import CkanSite, CkanUnavailable, ensure_local_ckan, make_world  # noqa: E402
from tests.support.processes import free_port, wait_http  # noqa: E402

ACCESS_KEY, SECRET_KEY, BUCKET = "bench-access-key", "bench-secret-key", "bench-uploads"
MiB = 1024 * 1024
BLOCK = 64 * MiB
QUICK_SIZE = 128 * MiB


def byte_size(text: str) -> int:
    """6G, 200M, 512k or plain bytes."""
    units = {"k": 1024, "m": MiB, "g": 1024 * MiB, "t": 1024 * 1024 * MiB}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


@contextmanager
def process(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def write_file(path: Path, size: int) -> None:
    """Random bytes (a random 64 MiB block repeated: generating 6 GiB of entropy would dominate)."""
    block = os.urandom(min(BLOCK, max(size, 1)))
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            handle.write(block[: min(left, len(block))])
            left -= len(block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=byte_size, default=byte_size("3G"), help="file size (default 3G)")
    parser.add_argument("--jobs", type=int, default=4, help="parallel parts, for both sides (default 4)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of both uploads, medians reported (default 1)")
    parser.add_argument("--quick", action="store_true", help="128 MiB, one round: a check that it runs, not a figure")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the file is written")
    args = parser.parse_args()
    if args.quick:
        args.size, args.repeat = QUICK_SIZE, 1

    work = Path(tempfile.mkdtemp(prefix="bench-large-upload-", dir=args.dir))
    free = shutil.disk_usage(work).free
    if free < args.size * 2.2:
        shutil.rmtree(work, ignore_errors=True)
        need, have = args.size * 2.2 / 2**30, free / 2**30
        skip(f"needs about {need:.1f} GiB free in {args.dir} (the file and moto's copy), has {have:.1f}")
        return
    try:
        site = ensure_local_ckan()
    except CkanUnavailable as exc:
        shutil.rmtree(work, ignore_errors=True)
        skip(f"no local CKAN: {exc}")
        return
    try:
        run(args, work, site)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, site: CkanSite) -> None:
    world = make_world(site, "bench")
    moto_port, web_port = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{moto_port}"
    base_env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    service_env = {
        **{k: v for k, v in base_env.items() if not k.startswith(("STORAGE_", "CKAN_", "SQS_", "CF_"))},
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "DOTENV_PATH": os.devnull,
        # Debug stays off, as in production: that needs a real secret key.
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": f"sqlite:///{work / 'ledger.sqlite3'}",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "STORAGE_ENDPOINT_URL": endpoint,
        "STORAGE_REGION": "us-east-1",
        "STORAGE_BUCKET": BUCKET,
        "STORAGE_ACCESS_KEY_ID": ACCESS_KEY,
        "STORAGE_SECRET_ACCESS_KEY": SECRET_KEY,
        "CKAN_URL": site.url,
        "CKAN_API_TOKEN": site.sysadmin_token,
        "LOG_LEVEL": "WARNING",
    }
    path = work / "large.bin"
    print(f"writing {args.size / MiB:,.0f} MiB to {path}", flush=True)
    write_file(path, args.size)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env=service_env, cwd=ROOT, check=True
    )

    with ExitStack() as stack:
        moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)]
        stack.enter_context(process(moto, base_env, work / "moto.log"))
        wait_http(f"{endpoint}/moto-api/")
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        s3.create_bucket(Bucket=BUCKET)
        web = [sys.executable, "-m", "gunicorn", "dashboard.wsgi:application", "-b", f"127.0.0.1:{web_port}"]
        web += ["--workers", "1", "--threads", str(max(4, args.jobs * 2)), "--timeout", "300"]
        stack.enter_context(process(web, service_env, work / "web.log"))
        server = f"http://127.0.0.1:{web_port}"
        wait_http(f"{server}/healthz")

        client = [sys.executable, "-m", "ckan_upload", str(path), "--resource", world.resource["id"]]
        client += ["--server", server, "--token", world.editor.token, "--multipart", "--jobs", str(args.jobs)]
        client += ["--json", "--quiet"]
        client_env = {**base_env, "XDG_CACHE_HOME": str(work / "cache")}

        def time_client() -> tuple[float, dict]:
            started = time.perf_counter()
            done = subprocess.run(client, env=client_env, capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                logs = "".join(
                    f"\n--- {name} (tail) ---\n{(work / name).read_text(errors='replace')[-3000:]}"
                    for name in ("web.log", "moto.log")
                    if (work / name).exists()
                )
                sys.exit(f"ckan-upload exited {done.returncode}: {done.stderr[-2000:]}{logs}")
            result = json.loads(done.stdout)
            status = requests.get(
                f"{server}/api/v1/uploads/{result['upload_id']}",
                headers={"Authorization": world.editor.token},
                timeout=30,
            ).json()
            key = s3.list_objects_v2(Bucket=BUCKET)["Contents"][0]["Key"]
            assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == args.size
            s3.delete_object(Bucket=BUCKET, Key=key)
            phases.append(result["phases"])
            return seconds, status

        def time_boto3(part_size: int) -> float:
            config = TransferConfig(
                multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=args.jobs
            )
            started = time.perf_counter()
            s3.upload_file(str(path), BUCKET, "baseline/large.bin", Config=config)
            seconds = time.perf_counter() - started
            assert s3.head_object(Bucket=BUCKET, Key="baseline/large.bin")["ContentLength"] == args.size
            s3.delete_object(Bucket=BUCKET, Key="baseline/large.bin")
            return seconds

        client_runs: list[float] = []
        phases: list[dict[str, float]] = []
        boto_runs: list[float] = []
        for round_number in range(args.repeat):
            # Alternate who goes first: a warm moto or a busy neighbour should not favour one side.
            if round_number % 2 == 0:
                seconds, status = time_client()
                client_runs.append(seconds)
                boto_runs.append(time_boto3(int(status["part_size"])))
            else:
                boto_runs.append(time_boto3(int(status["part_size"])))
                seconds, status = time_client()
                client_runs.append(seconds)
            print(
                f"round {round_number + 1}: ckan-upload {client_runs[-1]:.1f} s, boto3 {boto_runs[-1]:.1f} s",
                flush=True,
            )

    part_size = int(status["part_size"])
    client_seconds, boto_seconds = statistics.median(client_runs), statistics.median(boto_runs)
    client_rate = args.size / MiB / client_seconds
    boto_rate = args.size / MiB / boto_seconds
    parts = f"{status['part_count']} parts of {part_size / MiB:g} MiB"
    print(f"file:                         {args.size / MiB:,.0f} MiB, {parts}, {args.jobs} jobs, {args.repeat} rounds")
    print(f"ckan-upload (issue→complete): {client_seconds:.1f} s  ({client_rate:.1f} MiB/s), median")
    print(f"boto3 upload_file (baseline): {boto_seconds:.1f} s  ({boto_rate:.1f} MiB/s), median")
    print(f"ratio client / boto3:         {client_rate / boto_rate:.2f}")
    medians = {
        name: round(statistics.median(p.get(name, 0.0) for p in phases), 2) for name in ("start", "send", "complete")
    }
    print(f"client phases (median s):     {medians}  (start: issue; send: the parts; complete: the service)")
    rounds = f"ckan-upload {[round(x, 2) for x in client_runs]}, boto3 {[round(x, 2) for x in boto_runs]}"
    print(f"per round (s):                {rounds}")
    emit(
        benchmark="large_upload",
        measure=f"ckan-upload vs boto3 upload_file, {args.size / MiB:,.0f} MiB, {args.jobs} jobs",
        value=round(client_rate, 1),
        baseline=round(boto_rate, 1),
        unit="MiB/s",
        higher_is_better=True,
    )


if __name__ == "__main__":
    main()
