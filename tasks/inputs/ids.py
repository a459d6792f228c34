"""Item ids: they become file names under the output root, so they must be safe and unique.

Shared by every input kind (manifest rows, podcast episodes). Uniqueness ignores case because
"Intro" and "intro" are the same file on macOS and Windows file systems.
"""
from __future__ import annotations

import re
import unicodedata

MAX_ID_LENGTH = 128
_HINT = "ids become file names under the output root: use letters, digits, spaces, '-', '_' or '.' (not first)"
_UNSAFE_CHARS = frozenset('/\\:*?"<>|')
_NOT_WORD = re.compile(r"[^\w.\-]+")  # \w: Unicode letters, digits and '_'
_PLAIN = re.compile(r"[A-Za-z0-9_\-. ]*")  # surely safe characters: skip the per-character check
_DASH_RUN = re.compile(r"[-.]*-[-.]*")
_RESERVED_NAMES = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
                             *(f"lpt{i}" for i in range(10))})  # Windows device names


def id_problem(item_id: str) -> str | None:
    """Why `item_id` cannot be a file name under the output root, or None if it can."""
    if len(item_id) > MAX_ID_LENGTH:
        return f"id is {len(item_id)} characters long; the limit is {MAX_ID_LENGTH}"
    bad = [] if _PLAIN.fullmatch(item_id) else sorted(
        {c for c in item_id if c in _UNSAFE_CHARS or unicodedata.category(c)[0] == "C"})
    if bad:
        return f"id {item_id!r} contains {', '.join(map(repr, bad))}; {_HINT}"
    if item_id.startswith(".") or item_id.endswith("."):
        return f"id {item_id!r} starts or ends with '.'; {_HINT}"
    if item_id.split(".")[0].lower() in _RESERVED_NAMES:
        return f"id {item_id!r} is a reserved device name on Windows; choose another id"
    return None


def slugify(text: str, max_length: int = 64) -> str:
    """A file-name-safe id made from any text: Unicode letters and digits kept, the rest '-'."""
    text = _NOT_WORD.sub(_dash_unless_marks, unicodedata.normalize("NFC", text))
    slug = _DASH_RUN.sub("-", text).strip("-_.")[:max_length].rstrip("-_.")
    if not slug or slug.split(".")[0].lower() in _RESERVED_NAMES:
        slug = f"item-{slug}".rstrip("-")
    return slug


def _dash_unless_marks(match: re.Match[str]) -> str:
    # combining marks (Devanagari vowel signs...) belong to their word although \\w excludes them
    return "".join(c if unicodedata.category(c)[0] == "M" else "-" for c in match.group())


class IdRegistry:
    """Hands out unique ids: explicit ids are claimed first, derived ones get -2, -3... suffixes."""

    def __init__(self) -> None:
        self._owners: dict[str, int] = {}  # casefolded id -> the row (or index) that owns it
        self._next_suffix: dict[str, int] = {}

    def claim(self, item_id: str, owner: int) -> int | None:
        """Take `item_id` for `owner`; returns the earlier owner instead when it is taken."""
        key = item_id.casefold()
        if key in self._owners:
            return self._owners[key]
        self._owners[key] = owner
        return None

    def derive(self, basis: str, owner: int) -> str:
        """`basis` made safe, or with the first free -N suffix; never an already claimed id."""
        basis = slugify(basis)
        candidate, key = basis, basis.casefold()
        n = self._next_suffix.get(key, 2)
        while candidate.casefold() in self._owners:
            candidate = f"{basis}-{n}"
            n += 1
        self._next_suffix[key] = n
        self._owners[candidate.casefold()] = owner
        return candidate
