"""The carbon-aware GPU federation broker."""

__version__ = "0.1.0"
