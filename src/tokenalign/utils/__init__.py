"""Shared helpers: atomic I/O, logging, seeding."""
