"""ModelAdmins for the ledger: uploads, storage events, link attempts; replay."""
