"""Adapters that plug tango-prune into third-party evaluation harnesses (lmms-eval)."""
