"""ModelAdmins for reconciliation runs and discrepancies."""
