"""Trace replay for the simulator: the canonical job-trace CSV and converters from public traces."""
