"""Where the shared test data lives: ../shared/data beside the checkout (AUDIOBATCH_TEST_DATA overrides)."""
from __future__ import annotations

import os
from pathlib import Path

from audiobatch.tasks.text.speakable import speakable_text

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("AUDIOBATCH_TEST_DATA", ROOT.parent / "shared" / "data"))
SPEECH = DATA / "speech" / "audio"
REFERENCES = DATA / "speech" / "references.csv"
TEXTS = DATA / "texts"


def spoken_text(name: str) -> str:
    """A shared text as the narration should say it: speakable text (Markdown reduced)."""
    return speakable_text((TEXTS / name).read_text(encoding="utf-8"), markdown=name.endswith(".md"))
