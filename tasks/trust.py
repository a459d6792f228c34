"""Who stands behind a run's inputs, and what that lets them do (README "Security model").

Trusted: the operator, who types commands on their own machine, creates deployments and starts
workers (with the key in their environment). Not trusted: what is inside a feed; manifests
that arrive through the inbox, `submit` or the Prefect API, and the parameters of such runs.

A flow decides once, at its start, what its run may do (`Trust`); the pipeline then holds to it:
local files only inside `local_roots`, and never from a feed.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Trust:
    """What a run's items may reach, decided by the flow that starts the run."""

    operator_run: bool = True  # started on the operator's machine (CLI or Python), not by a worker
    # Local files the items may read: None = any (the operator's own manifest), () = none (items
    # from a feed), else only inside these folders (manifests from others).
    local_roots: tuple[str, ...] | None = None


OPERATOR = Trust()
FEED_ITEMS = Trust(local_roots=())
