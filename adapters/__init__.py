"""Vendor and engine adapters, one module each; found by name through entry points.

Each module imports its engine only inside functions, so listing adapters never
needs an optional dependency installed.
"""
