"""Shared fixtures: tiny corpora made by usgm's own generator, once per test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)


def _voice(rng: np.random.Generator, f0_hz: float, sr: int) -> np.ndarray:
    """A short harmonic 'voice' clip with silence around it (for the trimming)."""
    t = np.arange(int(rng.uniform(0.6, 1.2) * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0_hz * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / sr
    x = sum(np.sin(h * phase) / h for h in range(1, 6)) * np.hanning(len(t)) * 0.3
    return np.concatenate([np.zeros(2000), x, np.zeros(2000)])


def write_fake_packages(root: Path, clips: int = 3, extra: bool = True) -> Path:
    """Unpacked stand-ins of the recorded-speech Debian packages under ``root``.

    Fish Fillets clips for its four speakers and five Hedgewars voice packs (two dev, two test,
    one train), OGG Vorbis at 22.05 kHz; ``extra`` adds files the bank must skip (an unknown
    character, a sound effect, a too-short clip).
    """
    sr = 22050
    rng = np.random.default_rng(7)
    sound = root / "usr/share/games/fillets-ng/sound"
    for k, (lang, who) in enumerate([("cs", "m"), ("cs", "v"), ("nl", "m"), ("nl", "v")]):
        folder = sound / f"lvl{k % 2}" / lang
        folder.mkdir(parents=True, exist_ok=True)
        for c in range(clips):
            sf.write(folder / f"lvl{k % 2}-{who}-line{c}.ogg", _voice(rng, 110.0 * (1 + k), sr), sr)
    voices = root / "usr/share/games/hedgewars/Data/Sounds/voices"
    for k, pack in enumerate(["British", "Russian", "Default_es", "Mobster", "Pirate"]):
        (voices / pack).mkdir(parents=True)
        for c in range(clips):
            sf.write(voices / pack / f"Word{c}.ogg", _voice(rng, 130.0 + 40 * k, sr), sr)
    if extra:
        sf.write(sound / "lvl0" / "cs" / "lvl0-hs-radio.ogg", np.ones(sr) * 0.1, sr)
        sf.write(sound / "lvl0" / "cs" / "lvl0-m-short.ogg", np.ones(800) * 0.1, sr)
        sf.write(sound / "lvl0" / "cs" / "bubbles.ogg", np.ones(sr) * 0.1, sr)
        (voices / "Robot").mkdir()
        sf.write(voices / "Robot" / "Beep.ogg", _voice(rng, 100.0, sr), sr)
    return root


@pytest.fixture(scope="session", autouse=True)
def fake_recorded_speech(tmp_path_factory: pytest.TempPathFactory):
    """Point ``USGM_CACHE`` at a cache holding stand-in recorded speech (no downloads in tests).

    Subprocesses (train.py, usgm-make-data) inherit the variable.
    """
    cache = tmp_path_factory.mktemp("usgm-cache")
    pkgs = write_fake_packages(cache / "recorded" / "pkgs")
    (pkgs / ".complete").touch()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("USGM_CACHE", str(cache))
        yield cache


def _make(tmp_path_factory: pytest.TempPathFactory, n_src: int) -> Path:
    from usgm.data.synth import make_dataset

    out = tmp_path_factory.mktemp(f"tiny{n_src}mix") / f"Libri{n_src}Mix"
    return make_dataset(out, n_src=n_src, n_train=6, n_dev=2, n_test=2, seed=123, num_workers=1)


@pytest.fixture(scope="session")
def tiny_2mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a generated 2-speaker corpus (6/2/2 mixtures) in the LibriMix layout."""
    return _make(tmp_path_factory, 2)


@pytest.fixture(scope="session")
def tiny_3mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a generated 3-speaker corpus (6/2/2 mixtures) in the LibriMix layout."""
    return _make(tmp_path_factory, 3)
