"""Tiny random components for tests and smoke runs."""
