"""Shared test harness (not collected: no test_ modules)."""
