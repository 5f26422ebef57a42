"""Differential privacy: accounting, record- and user-level mechanisms, the ledger."""
