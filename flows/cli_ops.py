"""`audiobatch` subcommands for unattended operation: podcast, deploy, submit, inbox."""
from __future__ import annotations

from typing import Any


def add_parsers(sub: Any) -> None:
    """Register the operations subcommands on the `audiobatch` parser (see flows/cli.py)."""
