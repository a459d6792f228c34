"""audiobatch: batch transcription and narration with audio LLMs, orchestrated by Prefect.

The repository keeps its stages in top-level folders (flows/, tasks/, localmodel/); installed,
they are the subpackages `audiobatch.flows`, `audiobatch.tasks` and `audiobatch.localmodel`
(setuptools `package-dir`), so nothing named `flows` or `tasks` lands in site-packages.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("audiobatch")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
