"""`python -m ckan_upload` runs the command."""

from __future__ import annotations

from ckan_upload.cli import main

raise SystemExit(main())
