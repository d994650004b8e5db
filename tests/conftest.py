"""Shared fixtures: tiny corpora made by usgm's own generator, once per test session."""

from __future__ import annotations

import io
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from usgm.data.synth.voicepacks import PACKAGES

ROOT = Path(__file__).resolve().parents[1]
# Installed voice packages of this machine must not leak into the tests (nor their subprocesses):
# set before usgm.data.synth.recorded is imported, which reads it once.
os.environ["USGM_SYSTEM_ROOT"] = tempfile.mkdtemp(prefix="usgm-no-system-packages-")

torch.set_num_threads(1)


def _voice(rng: np.random.Generator, f0_hz: float, sr: int) -> np.ndarray:
    """A short harmonic 'voice' clip with silence around it (for the trimming)."""
    t = np.arange(int(rng.uniform(0.6, 1.2) * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0_hz * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / sr
    x = sum(np.sin(h * phase) / h for h in range(1, 6)) * np.hanning(len(t)) * 0.3
    return np.concatenate([np.zeros(2000), x, np.zeros(2000)])


def _queen_bundle(path: Path, entries: dict[str, bytes]) -> None:
    """A FOTAQ resource bundle (``queen.1c`` layout: QTBL table, then the data)."""
    head = b"QTBL" + b"CEM10\0" + b"\0\0\x01" + struct.pack(">H", len(entries))
    offset = len(head) + 21 * len(entries)
    table, data = b"", b""
    for name, payload in entries.items():
        table += name.encode().ljust(12, b"\0") + b"\x01" + struct.pack(">II", offset, len(payload))
        offset += len(payload)
        data += payload
    path.write_bytes(head + table + data)


def write_fake_packages(root: Path, clips: int = 3, extra: bool = True) -> Path:
    """Unpacked stand-ins of the recorded-speech Debian packages, one folder per package.

    ``root/<package>/<voice folder>`` for every package of ``voicepacks.SOURCES``: Fish Fillets
    (four speakers), five Hedgewars packs (two dev, two test, one train), Drascula English
    (raw 8-bit lines of the hero and Drascula) and Spanish (the hero), Flight of the Amazon
    Queen (MP3 lines of Joe and one dialogue partner inside ``queen.1c``), KTuberling (de: dev,
    lt: test, fr) and KLettres (fr). ``extra`` adds what the bank must skip: an unknown
    character, sound effects, a too-short clip, a cut-scene line, a link to another package's
    file, a repeated recording and a speaker with a single short line.
    """
    sr = 22050
    rng = np.random.default_rng(7)
    f0 = iter(np.linspace(100.0, 330.0, 40))
    sound = root / "fillets-ng-data-cs/usr/share/games/fillets-ng/sound"
    for k, (lang, who) in enumerate([("cs", "m"), ("cs", "v"), ("nl", "m"), ("nl", "v")]):
        folder = root / f"fillets-ng-data-{lang}/usr/share/games/fillets-ng/sound/lvl{k % 2}/{lang}"
        folder.mkdir(parents=True, exist_ok=True)
        for c in range(clips):
            sf.write(folder / f"lvl{k % 2}-{who}-line{c}.ogg", _voice(rng, next(f0), sr), sr)
    voices = root / "hedgewars-data/usr/share/games/hedgewars/Data/Sounds/voices"
    for pack in ["British", "Russian", "Default_es", "Mobster", "Pirate"]:
        (voices / pack).mkdir(parents=True)
        pitch = next(f0)
        for c in range(clips):
            sf.write(voices / pack / f"Word{c}.ogg", _voice(rng, pitch, sr), sr)
    dras = {"en": root / "drascula/usr/share/scummvm/drascula/en",
            "es": root / "drascula-spanish/usr/share/scummvm/drascula/es"}  # fmt: skip
    for lang, prefixes in (("en", ["", "D"]), ("es", [""])):
        dras[lang].mkdir(parents=True)
        for prefix in prefixes:
            pitch = next(f0)
            for c in range(clips):
                x = _voice(rng, pitch, 11025)
                (dras[lang] / f"{prefix}{c + 1}.ALS").write_bytes(
                    np.clip(np.round(x * 127 + 128), 0, 255).astype(np.uint8).tobytes()
                )
    lines = {}
    for talk, who in (("05", "J"), ("05", "P")):
        pitch = next(f0)
        for c in range(clips):
            mp3 = io.BytesIO()
            sf.write(mp3, _voice(rng, pitch, 11025), 11025, format="MP3")
            lines[f"{talk}00{c:02d}{who}1.SB"] = mp3.getvalue()
    for lang in ("de", "lt", "fr"):
        folder = root / f"ktuberling-data/usr/share/ktuberling/sounds/{lang}"
        folder.mkdir(parents=True)
        pitch = next(f0)
        for c in range(clips):
            sf.write(folder / f"object{c}.ogg", _voice(rng, pitch, 44100), 44100)
    alpha = root / "klettres-data/usr/share/klettres/fr/alpha"
    alpha.mkdir(parents=True)
    pitch = next(f0)
    for c in range(clips):
        sf.write(alpha / f"{chr(65 + c)}.ogg", _voice(rng, pitch, 44100), 44100)
    if extra:
        bad = sound / "lvl0" / "cs"
        sf.write(bad / "lvl0-hs-radio.ogg", np.ones(sr) * 0.1, sr)
        sf.write(bad / "lvl0-m-short.ogg", np.ones(800) * 0.1, sr)
        sf.write(bad / "bubbles.ogg", np.ones(sr) * 0.1, sr)
        (voices / "Robot").mkdir()
        sf.write(voices / "Robot" / "Beep.ogg", _voice(rng, 100.0, sr), sr)
        (dras["en"] / "S1.ALS").write_bytes(bytes(range(256)) * 40)  # a sound effect
        (dras["es"] / "D1.ALS").symlink_to("../en/D1.ALS")  # the English line, reused
        (root / "klettres-data/usr/share/klettres/fr/alpha/Z.ogg").write_bytes(
            (alpha / "A.ogg").read_bytes()
        )  # the same recording twice
        lines["C12A_011.SB"] = lines["050000J1.SB"]  # cut scene: speaker unknown
        lines["ROOM1.PCX"] = b"\0" * 64
        lone = root / "ktuberling-data/usr/share/ktuberling/sounds/ga"  # one 0.5 s line only
        lone.mkdir(parents=True)
        t = np.arange(int(0.5 * sr)) / sr
        sf.write(lone / "word.ogg", 0.3 * np.sin(2 * np.pi * 150 * t) * np.hanning(len(t)), sr)
    fotaq = root / "flight-of-the-amazon-queen/usr/share/scummvm/flight-of-the-amazon-queen"
    fotaq.mkdir(parents=True)
    _queen_bundle(fotaq / "queen.1c", lines)
    for package in PACKAGES:
        (root / package / ".complete").touch()
    return root


@pytest.fixture(scope="session", autouse=True)
def fake_recorded_speech(tmp_path_factory: pytest.TempPathFactory):
    """Point ``USGM_CACHE`` at a cache holding stand-in recorded speech (no downloads in tests).

    Subprocesses (train.py, usgm-make-data) inherit the variable.
    """
    cache = tmp_path_factory.mktemp("usgm-cache")
    write_fake_packages(cache / "recorded" / "pkgs")
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
