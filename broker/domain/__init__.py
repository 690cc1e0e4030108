"""The broker's vocabulary: plain typed values and pure functions, no I/O.

Everything here is importable from the simulator, the connectors and the service alike;
an import-linter contract (see pyproject.toml) keeps frameworks and SDKs out.
"""
