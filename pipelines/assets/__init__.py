"""Dagster assets, one module per stage. Each asset is a thin wrapper over domain code."""
