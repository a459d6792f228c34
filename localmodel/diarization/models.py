"""The two networks on onnxruntime: local speaker segmentation of 10 s windows (pyannote
segmentation-3.0) and speaker embeddings of speech stretches (CAM++).

Segmentation frame geometry (the SincNet conv/pool stack: kernels 251,3,5,3,5,3, strides
10,3,1,3,1,3): a frame sees 991 samples, frames are 270 samples (16.875 ms) apart, and frame j
of a window starting at sample s is centred on sample s + 495 + 270 j; a 160,000-sample window
gives 589 frames. Its 7 powerset classes are the sets of at most 2 of 3 local speakers.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import onnx
import onnxruntime as ort

from audiobatch.localmodel.diarization.fbank import mean_normalize

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 160_000
FRAMES_PER_WINDOW = 589
FRAME_STEP = 270  # samples between two segmentation frames
FRAME_CENTER0 = 495  # centre of a window's frame 0, in samples from the window's start
LOCAL_SPEAKERS = 3
EMBEDDING_DIM = 192


def _powerset() -> np.ndarray:
    rows = []
    for size in range(3):
        for members in combinations(range(LOCAL_SPEAKERS), size):
            row = np.zeros(LOCAL_SPEAKERS, np.uint8)
            row[list(members)] = 1
            rows.append(row)
    return np.stack(rows)


POWERSET = _powerset()  # class -> active local speakers: {}, {0}, {1}, {2}, {0,1}, {0,2}, {1,2}


def frame_center_s(frame: np.ndarray | int) -> np.ndarray:
    """The time of a global frame's centre (windows start on the frame grid)."""
    return (FRAME_CENTER0 + FRAME_STEP * np.asarray(frame, dtype=np.float64)) / SAMPLE_RATE


def _session(model: onnx.ModelProto, threads: int, mem_arena: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # the arena keeps a batch's peak activations allocated (faster; its size follows the batch)
    options.enable_cpu_mem_arena = mem_arena
    # no busy-waiting: segmentation and embedding run at the same time on 2 cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


class Segmenter:
    """Who of up to 3 local speakers is active in each frame of a batch of 10 s windows."""

    def __init__(self, model: onnx.ModelProto, threads: int = 2) -> None:
        self.session = _session(model, threads)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """(B, 160000) float32 -> (B, 589, 3) uint8 activity (the most likely powerset class)."""
        batch = np.ascontiguousarray(windows, dtype=np.float32)[:, None, :]
        log_probs = self.session.run(None, {"waveform": batch})[0]
        return POWERSET[np.argmax(log_probs, axis=-1)]


class Embedder:
    """A speaker embedding of one stretch of speech, from its fbank features. CAM++ pools over
    time, so padding would change the result: stretches are embedded one at a time."""

    def __init__(self, model: onnx.ModelProto, threads: int = 1) -> None:
        self.session = _session(model, threads)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """(T, 80) log-mel -> (192,) embedding (not length-normalised)."""
        batch = mean_normalize(np.asarray(features, np.float32))[None]
        return self.session.run(None, {"fbank": batch})[0][0]
