"""The admin: the ledger (uploads, events, attempts), replay, and reconciliation runs."""

from dashboard.admin import ledger, reconcile  # noqa: F401  (registers the ModelAdmins)
