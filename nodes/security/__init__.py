"""Keys, authentication failures and the audit log."""
