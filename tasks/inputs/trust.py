"""Who stands behind a run's inputs, and what that lets them do (docs/security.md).

Trusted: the operator, who types commands on their own machine, creates deployments and starts
workers (with the key in their environment). Not trusted: what is inside a feed; manifests that
arrive through the inbox, `submit` or the Prefect API, and the parameters of such runs.

A flow decides once, at its start, what its run may do (`Trust`, made by flows/guard.py); the
pipeline then holds to it: local files only inside the data roots (never from a feed), the key
only to allowed base URLs. The rules themselves are plain functions here:
- `check_run_id`: run ids become folder names, so they are a strict pattern everywhere;
- `operator_roots`: the deployment's data roots, else AUDIOBATCH_DATA_ROOTS; none named: none;
- `allowed_base_urls` / `check_base_url`: AUDIOBATCH_ALLOWED_BASE_URLS, else (for runs started
  through the Prefect API) only the worker's own OPENAI_BASE_URL or the deployment's;
- `widened`: what a run's options may not do to the deployment's (raise any cap, add a scheme,
  host or data root, change the price table, profile file or feed).
Paths and URLs are compared by where they lead, never as strings (tasks/inputs/locations.py).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import get_args
from urllib.parse import urlsplit

from pydantic.fields import FieldInfo

from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.inputs.locations import inside
from audiobatch.tasks.inputs.sources import safe_url
from audiobatch.tasks.options import RUN_ID_PATTERN, JobOptions, option_fields, option_value

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


def operator_roots(named: Sequence[str] = ()) -> tuple[str, ...]:
    """The folders the operator let runs started by others read local files from: `named` (the
    deployment's `--data-root`s), else the worker's AUDIOBATCH_DATA_ROOTS; none named: none."""
    return real_roots(named or env_list(DATA_ROOTS_ENV))


def real_roots(roots: Iterable[str]) -> tuple[str, ...]:
    """Local folders as real paths (`~`, `..` and links resolved), in order, without repeats."""
    return tuple(dict.fromkeys(os.path.realpath(os.path.expanduser(str(root))) for root in roots))


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
# Each option of such a run is compared with its deployment's (the operator's). Every number in
# the options model is a cap unless named below: a run may lower it, never raise it, and may not
# put back the default (None) where the deployment set a number. So an option added later is a
# cap until someone decides otherwise here (tests/test_untrusted_runs.py walks the model).
AT_LEAST = frozenset({"min_download_kb_s", "stale_claim_h"})  # floors: a run may only raise them
# What the output is (speed, loudness, which shard, how captions are cut), bounded by the
# options model itself (captions: tasks/captions/cues.py bounds the work per word too).
CHOSEN = frozenset({"speed", "target_lufs", "economy_speed", "shard", "caption_line_chars",
                    "caption_lines", "caption_min_s", "caption_max_s", "caption_cps"})
# Caps where None means "no limit" (elsewhere None means "the default", which may be more).
NO_LIMIT_WHEN_NONE = frozenset({"requests_per_minute", "tokens_per_minute", "item_deadline_s",
                                "max_cost_usd", "limit"})
SUBSET = frozenset({"allow_schemes", "allow_hosts"})  # a run may drop entries, not add them
WITHIN_ROOTS = frozenset({"data_roots"})  # each inside one of the operator's roots
SAME = frozenset({"profiles", "provider", "price_as", "feed_url"})  # the deployment's, or refused


def widened(run: JobOptions, operator: JobOptions, *, operator_roots: Sequence[str] = ()) -> list[str]:
    """How a run's options go beyond the operator's (the deployment's); [] when they don't.
    `operator_roots`: the data roots the operator named (the deployment's, else the worker's)."""
    problems = []
    for path, field in option_fields(type(operator)):
        name, value, limit = path[-1], option_value(run, path), option_value(operator, path)
        if name in SUBSET:
            extra = sorted(set(value or ()) - set(limit or ()))
            problems += [f"{name} adds {', '.join(extra)}"] if extra else []
        elif name in WITHIN_ROOTS:
            outside = [root for root in value or () if not any(inside(root, r) for r in operator_roots)]
            problems += [f"{name} {', '.join(outside)} is outside the operator's data roots "
                         f"({', '.join(operator_roots) or 'none'})"] if outside else []
        elif name in SAME:
            if value != limit:
                problems.append(f"{name} {value!r} is not the deployment's {limit!r}")
        elif is_number(field) and name not in CHOSEN:
            problems += [problem] if (problem := number_problem(name, value, limit)) else []
    return problems


def number_problem(name: str, value: float | None, limit: float | None) -> str | None:
    """Why a run's number goes beyond the deployment's (a cap, or a floor in AT_LEAST)."""
    shown = "none" if value is None else f"{value:g}"
    if value == limit:
        return None
    if name in AT_LEAST:
        if limit is not None and (value is None or value < limit):
            return f"{name} {shown} is below the deployment's {limit:g}"
        return None
    if limit is None:
        if name in NO_LIMIT_WHEN_NONE:
            return None
        return f"{name} {shown}: the deployment leaves it at its default, which a run may not change"
    if value is None:
        meaning = "no limit" if name in NO_LIMIT_WHEN_NONE else "the default"
        return f"{name} none ({meaning}) is above the deployment's {limit:g}"
    return f"{name} {shown} is above the deployment's {limit:g}" if value > limit else None


def is_number(field: FieldInfo) -> bool:
    """An int or float option (bool excluded), optional or not."""
    kinds = get_args(field.annotation) or (field.annotation,)
    return any(kind in (int, float) for kind in kinds)


def refuse_widening(problems: Iterable[str]) -> None:
    problems = list(problems)
    if problems:
        raise ConfigError("this run was started through the Prefect API (a deployment run), and "
                          "its parameters may not go beyond the deployment's: "
                          + "; ".join(problems) + ". Ask the operator to change the deployment.")
