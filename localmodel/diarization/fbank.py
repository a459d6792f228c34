"""Kaldi-compatible log mel filterbank in numpy (as used by 3D-Speaker / CAM++).

Matches ``torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=80,
sample_frequency=16000, dither=0)`` with all other options at their
defaults: 25 ms frames every 10 ms, ``snip_edges=True``, DC offset removal,
pre-emphasis 0.97 (first sample uses itself as predecessor), povey window
(Hann ** 0.85), zero-pad to 512, power spectrum, 80 triangular mel bins
between 20 Hz and Nyquist (Kaldi mel = 1127 ln(1 + f / 700)), natural log
with a floor of float32 epsilon.  3D-Speaker then subtracts the per-utterance
mean of every bin (:func:`mean_normalize`).  Input is float audio in [-1, 1].
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
FRAME_LEN = 400     # 25 ms
FRAME_SHIFT = 160   # 10 ms
N_FFT = 512
N_MELS = 80
PREEMPH = 0.97
EPS = float(np.finfo(np.float32).eps)


def num_frames(num_samples: int) -> int:
    """Frames produced for ``num_samples`` samples (Kaldi ``snip_edges=True``)."""
    return 0 if num_samples < FRAME_LEN else 1 + (num_samples - FRAME_LEN) // FRAME_SHIFT


@lru_cache(maxsize=None)
def mel_banks(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SAMPLE_RATE,
              low: float = 20.0, high: float = 0.0) -> np.ndarray:
    """Kaldi triangular mel filters as a (n_fft // 2 + 1, n_mels) float32 matrix."""
    high = sr / 2 + high if high <= 0 else high
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)
    mlow, mhigh = mel(low), mel(high)
    delta = (mhigh - mlow) / (n_mels + 1)
    i = np.arange(n_mels)[:, None]
    left, center, right = mlow + i * delta, mlow + (i + 1) * delta, mlow + (i + 2) * delta
    m = mel(sr / n_fft * np.arange(n_fft // 2))[None, :]
    w = np.maximum(0.0, np.minimum((m - left) / (center - left), (right - m) / (right - center)))
    w = np.concatenate([w, np.zeros((n_mels, 1))], axis=1)   # Nyquist bin gets no weight
    return np.ascontiguousarray(w.T.astype(np.float32))


@lru_cache(maxsize=None)
def _window() -> np.ndarray:
    n = np.arange(FRAME_LEN, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / (FRAME_LEN - 1))) ** 0.85


def fbank(samples: np.ndarray, chunk_frames: int = 4096) -> np.ndarray:
    """Log mel filterbank of 16 kHz float samples: (num_frames, 80) float32.

    Frames are processed ``chunk_frames`` at a time so memory stays bounded
    for long inputs.
    """
    x = np.asarray(samples, dtype=np.float32)
    n = num_frames(len(x))
    out = np.empty((n, N_MELS), np.float32)
    if n == 0:
        return out
    banks = mel_banks()
    win = _window()
    frames_all = np.lib.stride_tricks.as_strided(
        x, shape=(n, FRAME_LEN), strides=(x.strides[0] * FRAME_SHIFT, x.strides[0]), writeable=False)
    for s in range(0, n, chunk_frames):
        f = frames_all[s:s + chunk_frames].astype(np.float64)
        f = f - f.mean(axis=1, keepdims=True)
        f[:, 1:] -= PREEMPH * f[:, :-1].copy()
        f[:, 0] *= 1.0 - PREEMPH
        f *= win
        spec = np.fft.rfft(f, n=N_FFT, axis=1)
        power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
        np.log(np.maximum(power @ banks, EPS), out=out[s:s + len(f)])
    return out


def mean_normalize(feats: np.ndarray) -> np.ndarray:
    """Subtract the per-bin mean over frames (3D-Speaker ``mean_nor=True``)."""
    return feats - feats.mean(axis=0, keepdims=True) if len(feats) else feats
