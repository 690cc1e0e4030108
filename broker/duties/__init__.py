"""Scheduled work: periodic duties run by exactly one broker replica at a time.

`leader.Leader` holds a lease in the database (`lease.py`) and, while it does, runs an
APScheduler `AsyncIOScheduler` (`schedule.py`) whose jobs (`jobs.py`) call the broker's
`duties.Duties`. This module imports nothing, so that `broker.config` can import
`broker.duties.settings` without pulling in the database layers.
"""
