"""Grid carbon intensity: sources, forecasts and accounting.

This package is independent of the broker's service layers: it imports no aiohttp,
SQLAlchemy or connector code, so the scheduler, the simulator and reports can all use it.
"""
