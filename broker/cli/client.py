"""Commands that talk to a running broker over its HTTP API (filled in below)."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pass
