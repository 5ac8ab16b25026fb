"""MFCC features of one-second clips, in numpy (no audio library needed).

The paper (§5.1, "Audio Commands") featurizes Speech Commands "using MFCC
features with 32 filter banks over 25 ms windows with stride 10 ms",
giving 98 x 32 per clip, "same as Kusupati et al. (2018)".  At 16 kHz a
window is 400 samples and the stride 160, so a 16,000-sample clip has
``1 + (16000 - 400) // 160 = 98`` whole frames (no padding at the end).

The recipe is the textbook one (as in python_speech_features): pre-emphasis
0.97, Hamming window, 512-point power spectrum, 32 triangular filters on
the HTK mel scale from 0 Hz to Nyquist, natural log, then an orthonormal
DCT-II keeping all 32 coefficients.  ``kind="logfbank"`` stops before the
DCT (the log filterbank energies FastGRNN's scripts feed their RNNs); both
are 98 x 32 and differ by a fixed orthogonal map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.fft import dct


@dataclass(frozen=True)
class MfccConfig:
    """Featurizer settings (part of the feature cache key)."""

    sample_rate: int = 16000
    window_ms: float = 25.0
    stride_ms: float = 10.0
    n_filters: int = 32
    n_fft: int = 512
    preemphasis: float = 0.97
    kind: str = "mfcc"  # "mfcc" or "logfbank"

    @property
    def window(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def stride(self) -> int:
        return int(round(self.sample_rate * self.stride_ms / 1000))

    def n_frames(self, n_samples: int) -> int:
        return 1 + (n_samples - self.window) // self.stride


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(cfg: MfccConfig) -> np.ndarray:
    """Triangular filters, shape ``(n_filters, n_fft // 2 + 1)``, peak 1."""
    edges_hz = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array(cfg.sample_rate / 2)), cfg.n_filters + 2))
    bins_hz = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz - lower) / (centre - lower)
    falling = (upper - bins_hz) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def mfcc(clips: np.ndarray, cfg: MfccConfig = MfccConfig()) -> np.ndarray:
    """Features of clips ``(N, n_samples)`` in [-1, 1]: ``(N, frames, n_filters)`` float32.

    With the defaults and 16,000 samples: ``(N, 98, 32)``.
    """
    clips = np.asarray(clips, dtype=np.float64)
    emphasized = np.concatenate([clips[:, :1], clips[:, 1:] - cfg.preemphasis * clips[:, :-1]], axis=1)
    n_frames = cfg.n_frames(clips.shape[1])
    starts = np.arange(n_frames) * cfg.stride
    frames = emphasized[:, starts[:, None] + np.arange(cfg.window)]  # (N, frames, window)
    frames = frames * np.hamming(cfg.window)
    power = np.abs(np.fft.rfft(frames, n=cfg.n_fft, axis=-1)) ** 2 / cfg.n_fft
    energies = power @ mel_filterbank(cfg).T
    # silence gives zero energy: floor it so the log stays finite
    log_energies = np.log(np.maximum(energies, np.finfo(np.float64).eps))
    if cfg.kind == "logfbank":
        return log_energies.astype(np.float32)
    if cfg.kind != "mfcc":
        raise ValueError(f"unknown feature kind {cfg.kind!r}; use 'mfcc' or 'logfbank'")
    return dct(log_energies, type=2, norm="ortho", axis=-1).astype(np.float32)
