"""Shared fixtures of the benchmark-script tests: stand-ins for the real-speech prompts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 8000


def _tone_speech(rng: np.random.Generator, f0: float, seconds: float) -> np.ndarray:
    """A crude voiced stand-in: harmonics of ``f0`` with a syllable-rate envelope."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 8))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)) ** 2
    return (0.3 * x * env / 4).astype(np.float32)


def np_si_snr(est: np.ndarray, ref: np.ndarray) -> float:
    """Independent SI-SNR reference in numpy (zero-mean, projection onto the reference)."""
    ref = ref - ref.mean()
    est = est - est.mean()
    t = (est @ ref) / (ref @ ref) * ref
    return 10 * np.log10((t @ t) / ((est - t) @ (est - t)))


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory) -> Path:
    """Stand-in prompts under the dev set's speaker keys (what ``--speech-dir`` reads): one
    folder per key, 8 short files each (a 16 kHz one too)."""
    root = tmp_path_factory.mktemp("speech")
    rng = np.random.default_rng(0)
    for i, key in enumerate(["allison", "june", "carlo", "ru"]):
        d = root / key
        d.mkdir()
        for k in range(8):
            sr = 16000 if k == 0 else SR
            x = _tone_speech(rng, 100 + 40 * i, rng.uniform(0.4, 0.9))
            if sr != SR:
                x = np.repeat(x, 2)
            sf.write(d / f"p{k}.wav", x, sr, subtype="PCM_16")
    return root
