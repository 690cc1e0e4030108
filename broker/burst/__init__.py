"""Bursting to the clouds and reclaiming: cloud capacity for work private clusters cannot take.

`planner` decides (pure), `burster.Burster` acts through the cloud connectors and records
every burst and reclaim (`broker.db.capacity`); `settings.BurstSettings` is its part of the
settings tree. This module imports nothing, so the store can use `records` without loading
the burster.
"""
