"""Reusable `.sgl` modules that programs import (`import stdlib.qa`)."""
