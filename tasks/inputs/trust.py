"""Who stands behind a run's inputs, and what that lets them do (README "Security model").

Trusted: the operator, who types commands on their own machine, creates deployments and starts
workers (with the key in their environment). Not trusted: what is inside a feed; manifests that
arrive through the inbox, `submit` or the Prefect API, and the parameters of such runs.

A flow decides once, at its start, what its run may do (`Trust`, made by flows/guard.py); the
pipeline then holds to it: local files only inside the data roots (never from a feed), the key
only to allowed base URLs. The rules themselves are plain functions here:
- `check_run_id`: run ids become folder names, so they are a strict pattern everywhere;
- `data_roots`: AUDIOBATCH_DATA_ROOTS, else the folder the manifest came from;
- `allowed_base_urls` / `check_base_url`: AUDIOBATCH_ALLOWED_BASE_URLS, else (for runs started
  through the Prefect API) only the worker's own OPENAI_BASE_URL or the deployment's;
- `widened`: what a run's parameters may not do to the deployment's (raise a cap, add a scheme
  or host, change the price table or profile file, write outside the output root).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.inputs.sources import safe_url
from audiobatch.tasks.options import RUN_ID_PATTERN

DATA_ROOTS_ENV = "AUDIOBATCH_DATA_ROOTS"
ALLOWED_BASE_URLS_ENV = "AUDIOBATCH_ALLOWED_BASE_URLS"
_RUN_ID = re.compile(RUN_ID_PATTERN)
_LIST_SEPARATOR = re.compile(rf"[,{re.escape(os.pathsep)}]")


@dataclass(frozen=True)
class Trust:
    """What a run's items may reach, decided by the flow that starts the run."""

    operator_run: bool = True  # started on the operator's machine (CLI or Python), not by a worker
    # Local files the items may read: None = any (the operator's own manifest), () = none (items
    # from a feed), else only inside these folders (manifests from others).
    local_roots: tuple[str, ...] | None = None
    base_urls: frozenset[str] | None = None  # where the key may go (normalised); None: anywhere



def check_run_id(value: str, what: str = "--run-id") -> str:
    """`value` when it is a run id ([A-Za-z0-9][A-Za-z0-9._-]{0,63}); run ids name folders."""
    if not _RUN_ID.fullmatch(value):
        raise ConfigError(f"{what} {value!r} is not a run id: use 1 to 64 letters, digits, '.', "
                          "'_' or '-', starting with a letter or digit.")
    return value


def env_list(name: str) -> list[str]:
    """A comma- (or path-separator-) separated setting, blanks dropped."""
    return [part.strip() for part in _LIST_SEPARATOR.split(os.environ.get(name, "")) if part.strip()]


def data_roots(default: str | None) -> tuple[str, ...]:
    """Where the local files of a manifest from others may be: the operator's
    AUDIOBATCH_DATA_ROOTS, else `default` (the inbox, or the folder the manifest came from)."""
    roots = env_list(DATA_ROOTS_ENV) or ([default] if default else [])
    return tuple(os.path.realpath(os.path.expanduser(root)) for root in roots)


def inside(path: str, root: str) -> bool:
    """`path` is `root` or below it: real local paths, or URL prefixes (s3://bucket/a)."""
    if "://" in path or "://" in root:
        return path.rstrip("/") == root.rstrip("/") or path.startswith(root.rstrip("/") + "/")
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


# --- where the key may go ---------------------------------------------------------------------

def normal_base_url(url: str) -> str:
    """scheme://host[:port]/path, lower-cased where case does not matter, without credentials,
    query, default port or trailing slash: two spellings of one endpoint compare equal."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host
    port = parts.port if parts.port not in (None, {"http": 80, "https": 443}.get(scheme)) else None
    return f"{scheme}://{host}{f':{port}' if port else ''}{parts.path.rstrip('/')}"


def allowed_base_urls(*, operator_run: bool, deployment_base_url: str | None = None) -> frozenset[str] | None:
    """Base URLs a run may send the key to; None when any will do (the operator's own run)."""
    listed = env_list(ALLOWED_BASE_URLS_ENV)
    if listed:
        return frozenset(normal_base_url(url) for url in listed)
    if operator_run:
        return None
    own = [os.environ.get("OPENAI_BASE_URL"), deployment_base_url]
    return frozenset(normal_base_url(url) for url in own if url)


def check_base_url(base_url: str | None, allowed: frozenset[str] | None, *, operator_run: bool) -> None:
    """Refuse, before any request, a base URL the operator did not allow (None: the embedded model)."""
    if base_url is None or allowed is None or normal_base_url(base_url) in allowed:
        return
    if operator_run or os.environ.get(ALLOWED_BASE_URLS_ENV):
        where = f"{ALLOWED_BASE_URLS_ENV} ({', '.join(sorted(allowed)) or 'empty'})"
    else:
        where = ("the base URLs this worker's operator set (OPENAI_BASE_URL, the deployment's "
                 f"base_url: {', '.join(sorted(allowed)) or 'none, only the embedded model'})")
    raise ConfigError(f"base URL {safe_url(base_url)} is not allowed: the API key is only sent to "
                      f"{where}. Use one of those, or ask the operator to add it to "
                      f"{ALLOWED_BASE_URLS_ENV}.")


# --- what a run started by others may not widen --------------------------------------------------

AT_MOST = ("max_cost_usd", "max_download_mb", "download_deadline_s", "concurrency",
           "requests_per_minute", "tokens_per_minute", "max_attempts", "item_deadline_s")
AT_LEAST = ("min_download_kb_s",)
SUBSET = ("allow_schemes", "allow_hosts")
SAME = ("profiles", "provider", "price_as")


def widened(run: Mapping[str, Any], operator: Mapping[str, Any]) -> list[str]:
    """How a run's flat options go beyond the operator's (the deployment's); [] when they don't.
    A cap may be lowered, never raised or dropped (None means no cap)."""
    problems = []
    for name in AT_MOST:
        mine, limit = run.get(name), operator.get(name)
        if limit is not None and (mine is None or mine > limit):
            problems.append(f"{name} {'none' if mine is None else f'{mine:g}'} is above the "
                            f"deployment's {limit:g}")
    for name in AT_LEAST:
        mine, floor = run.get(name), operator.get(name)
        if floor is not None and (mine is None or mine < floor):
            problems.append(f"{name} {mine} is below the deployment's {floor:g}")
    for name in SUBSET:
        extra = sorted(set(run.get(name) or ()) - set(operator.get(name) or ()))
        if extra:
            problems.append(f"{name} adds {', '.join(extra)}")
    for name in SAME:
        if run.get(name) != operator.get(name):
            problems.append(f"{name} {run.get(name)!r} is not the deployment's {operator.get(name)!r}")
    return problems


def refuse_widening(problems: Iterable[str]) -> None:
    problems = list(problems)
    if problems:
        raise ConfigError("this run was started through the Prefect API (a deployment run), and "
                          "its parameters may not go beyond the deployment's: "
                          + "; ".join(problems) + ". Ask the operator to change the deployment.")
