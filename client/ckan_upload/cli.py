"""The `ckan-upload` command: arguments, output, exit codes."""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ckan_upload import __version__
from ckan_upload.progress import make_meter
from ckan_upload.service import ServiceError
from ckan_upload.slices import Cancelled
from ckan_upload.state import StateStore, Target
from ckan_upload.transfer import TransferError
from ckan_upload.upload import Outcome, Uploader, UploadRequest, WaitTimeout

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4
EXIT_FAILED = 5
EXIT_ENDED = 6
EXIT_TIMEOUT = 7
EXIT_INTERRUPTED = 130

EXIT_CODES = f"""exit codes:
  {EXIT_OK}    done (linked, or with --wait off: completed and accepted)
  {EXIT_USAGE}    bad arguments, or the file cannot be read
  {EXIT_REFUSED}    the service refused a request (bad input, no or wrong token, unknown resource or upload)
  {EXIT_UNREACHABLE}    the service or the store could not be reached, or a part failed after its retries
  {EXIT_FAILED}    --wait: the upload failed to link (the reason is printed)
  {EXIT_ENDED}    --wait: the upload ended expired, aborted or superseded
  {EXIT_TIMEOUT}    --wait: --timeout passed before the upload was linked (rerun to keep waiting)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C): rerun the same command to resume
"""

SUFFIXES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def byte_rate(text: str) -> float:
    """A rate such as 500000, 512k, 2M or 1G bytes per second."""
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    number, suffix = (value[:-1], value[-1]) if value and value[-1] in "kmg" else (value, "")
    try:
        rate = float(number) * SUFFIXES[suffix]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate in bytes per second: {text!r}")
    if rate <= 0:
        raise argparse.ArgumentTypeError("the rate must be positive")
    return rate


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(
        prog="ckan-upload",
        description="Upload a file to a CKAN resource through the CKAN Upload Reconciler. "
        "Large files go in parallel parts; rerunning an interrupted command resumes it.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, help="the file to upload")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--resource", metavar="ID", help="replace the file of this existing CKAN resource")
    target.add_argument("--dataset", metavar="ID", help="create a new resource in this dataset (needs --name)")
    parser.add_argument("--name", help="the new resource's name (with --dataset)")
    parser.add_argument(
        "--server", default=os.environ.get("CKAN_UPLOAD_SERVER"), help="the service URL (env CKAN_UPLOAD_SERVER)"
    )
    parser.add_argument(
        "--token", default=os.environ.get("CKAN_API_TOKEN"), help="your CKAN API token (env CKAN_API_TOKEN)"
    )
    parser.add_argument("--content-type", help="the file's media type (guessed from its name when not given)")
    parser.add_argument("--jobs", type=positive_int, default=4, help="parts sent at the same time (default 4)")
    parser.add_argument("--wait", action="store_true", help="wait until the file is linked in CKAN, print its URL")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits for the link (default 600)")
    parser.add_argument(
        "--multipart",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force (or refuse) a multipart upload; by default the service decides from the size",
    )
    parser.add_argument(
        "--sha256",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="declare the file's SHA-256 (default: yes for a single PUT, which the store verifies; no for multipart)",
    )
    parser.add_argument(
        "--limit-rate", type=byte_rate, metavar="BYTES_PER_S", help="cap the total upload rate (e.g. 2M, 500k)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object with the outcome at the end")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no messages, only errors")
    parser.add_argument("--version", action="version", version=f"ckan-upload {__version__}")
    return parser


def request_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> UploadRequest:
    """Check the arguments together and turn them into an upload request."""
    if args.dataset and not args.name:
        parser.error("--dataset needs --name")
    if args.resource and args.name:
        parser.error("--name goes with --dataset, not --resource")
    if not args.server:
        parser.error("no service URL: give --server or set CKAN_UPLOAD_SERVER")
    if not args.token:
        parser.error("no CKAN API token: give --token or set CKAN_API_TOKEN")
    path: Path = args.file.expanduser().resolve()
    if not path.is_file() or not os.access(path, os.R_OK):
        parser.error(f"cannot read the file {args.file}")
    content_type = args.content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return UploadRequest(
        path=path,
        target=Target(resource_id=args.resource, dataset_id=args.dataset, name=args.name),
        server=args.server,
        token=args.token,
        content_type=content_type,
        jobs=args.jobs,
        multipart=args.multipart,
        sha256=args.sha256,
        limit_rate=args.limit_rate,
        wait=args.wait,
        timeout=args.timeout,
    )


class Reporter:
    """Prints the outcome as text or as one JSON object, and errors on stderr."""

    def __init__(self, *, as_json: bool, quiet: bool) -> None:
        self.as_json = as_json
        self.quiet = quiet

    def outcome(self, outcome: Outcome) -> None:
        """The final result."""
        if self.as_json:
            print(json.dumps(asdict(outcome)))
            return
        if outcome.state == "linked":
            print(outcome.linked_url or f"linked (upload {outcome.upload_id})")
        elif outcome.last_error or outcome.state in ("failed", "expired", "aborted", "superseded"):
            self.error(f"upload {outcome.upload_id} {outcome.state}: {outcome.last_error or 'no reason given'}")
        elif not self.quiet:
            print(f"upload {outcome.upload_id} is {outcome.state}; it will be linked in CKAN shortly")

    def error(self, message: str, **details: object) -> None:
        """An error: on stderr, and as JSON on stdout with --json."""
        print(f"ckan-upload: {message}", file=sys.stderr)
        if self.as_json and details:
            print(json.dumps({"error": {"message": message, **details}}))


def exit_code_for(outcome: Outcome) -> int:
    """0 when linked or accepted; the failure's own code otherwise."""
    if outcome.state == "failed":
        return EXIT_FAILED
    if outcome.state in ("expired", "aborted", "superseded"):
        return EXIT_ENDED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; the return value is the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    request = request_from(args, parser)
    reporter = Reporter(as_json=args.json, quiet=args.quiet)
    cancel = threading.Event()
    meter = make_meter(quiet=args.quiet, is_terminal=sys.stderr.isatty())
    try:
        outcome = Uploader(request, cancel=cancel, store=StateStore(), meter=meter).run()
    except (KeyboardInterrupt, Cancelled):
        cancel.set()
        reporter.error("interrupted; run the same command again to resume", code="interrupted")
        return interrupted()
    except ServiceError as exc:
        reporter.error(str(exc), code=exc.code, status=exc.status)
        return EXIT_UNREACHABLE if exc.status == 0 or exc.status >= 500 else EXIT_REFUSED
    except TransferError as exc:
        reporter.error(f"{exc}; run the same command again to resume", code="transfer_failed")
        return EXIT_UNREACHABLE
    except WaitTimeout as exc:
        reporter.error(f"{exc} after {request.timeout:g} s; run the same command again to keep waiting", code="timeout")
        return EXIT_TIMEOUT
    reporter.outcome(outcome)
    return exit_code_for(outcome)


def interrupted() -> int:
    """Exit 130 now, even if a part thread is still blocked on the network (the state file is safe)."""
    if threading.active_count() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    return EXIT_INTERRUPTED
