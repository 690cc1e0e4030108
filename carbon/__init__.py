"""Grid carbon intensity: sources, forecasts and accounting.

The package knows nothing of the broker's service layers (no SQLAlchemy, API or connector
code), so the scheduler, the simulator and the reports can all use it. Live sources talk
HTTP through aiohttp (`carbon.live`); `carbon.wiring` builds the chain the broker uses from
the `carbon:` settings. Method and sources: docs/carbon.md.
"""
