from __future__ import annotations

import io

from rich.console import Console

from ckan_upload.progress import Bar, Silent, make_meter


def test_there_is_a_bar_only_on_a_terminal_and_not_when_quiet():
    assert isinstance(make_meter(quiet=False, is_terminal=True), Bar)
    assert isinstance(make_meter(quiet=True, is_terminal=True), Silent)
    assert isinstance(make_meter(quiet=False, is_terminal=False), Silent)


def test_the_bar_counts_bytes_taken_back_after_a_failed_attempt():
    out = io.StringIO()
    bar = Bar(Console(file=out, force_terminal=True, width=100))
    bar.start("uploading", total=3 * 1024 * 1024, completed=1024 * 1024)
    bar.advance(2 * 1024 * 1024)
    bar.advance(-1024 * 1024)
    bar.advance(1024 * 1024)
    bar.stop()
    assert "3.0/3.0 MiB" in out.getvalue()
