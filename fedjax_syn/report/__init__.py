"""Reporting: tables and figures computed from a results ledger, and the end-to-end regeneration
of a paper table.

The top layer of the library: it may import everything below it (`runs/` and down).
"""
