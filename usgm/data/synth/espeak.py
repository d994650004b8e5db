"""eSpeak NG through ctypes (the ``espeakng-loader`` wheel bundles the library and its data).

The library is a process-wide singleton with hidden state that carries from one utterance to the
next (and survives Terminate + Initialize), so callers that need reproducible audio must control
everything a process synthesises: the generator runs each fixed shard of work in a fresh process.

Voices are chosen by *direct path* (``"<lang file>+<variant file>"``, see :func:`make_data_dir`):
eSpeak then loads the two files without building its voice list, which holds at most 349 entries
and silently breaks voice selection when a data folder holds more voice files than that.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000
POS_CHARACTER = 1
CHARS_UTF8 = 1
# espeak_PARAMETER
RATE, VOLUME, PITCH, RANGE, WORDGAP = 1, 2, 3, 4, 7

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakError(RuntimeError):
    """eSpeak NG refused a call (missing library or data, unknown voice)."""


def bundled_data_path() -> Path:
    """The ``espeak-ng-data`` folder shipped in the espeakng-loader wheel."""
    try:
        import espeakng_loader
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise EspeakError(
            "the package 'espeakng-loader' is needed: pip install espeakng-loader"
        ) from exc
    return Path(espeakng_loader.get_data_path())


def _library_path() -> str:
    import espeakng_loader

    return espeakng_loader.get_library_path()


def make_data_dir(
    dest: str | os.PathLike[str], languages: Mapping[str, str], variants: Mapping[str, str]
) -> Path:
    """Build a private eSpeak data folder with our base languages and voice variants.

    A copy of the bundled data, with ``lang/`` reduced to the requested languages under flat,
    lower-case names (eSpeak lower-cases the language part of a voice name before looking for
    the file, so ``lang/gmw/en-US`` could never be found by path) and ``voices/!v`` holding only
    our variants.

    Args:
        dest: folder to create (must not exist).
        languages: our language key (lower case, e.g. ``"en-us"``) → bundled file under ``lang/``
            (e.g. ``"gmw/en-US"``).
        variants: variant file name (lower case) → file text.

    Returns:
        The data folder, to pass to :class:`Espeak`.
    """
    src = bundled_data_path()
    dest = Path(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("lang", "voices"))
    (dest / "lang").mkdir()
    for key, rel in languages.items():
        if key != key.lower() or "/" in key:
            raise ValueError(f"language key must be flat lower case, got {key!r}")
        shutil.copyfile(src / "lang" / rel, dest / "lang" / key)
    vdir = dest / "voices" / "!v"
    vdir.mkdir(parents=True)
    for name, text in variants.items():
        if name != name.lower() or len(name) > 30:
            raise ValueError(f"variant names must be short and lower case, got {name!r}")
        (vdir / name).write_text(text, encoding="ascii")
    return dest


class Espeak:
    """The eSpeak NG synthesiser of this process (22,050 Hz int16, synchronous mode).

    Args:
        data_path: an ``espeak-ng-data`` folder (default: the bundled one).

    Only one data folder can be used per process: a second instance with another folder raises.
    """

    _initialised: Path | None = None  # the data folder of this process's eSpeak
    _rate: int = 22050

    def __init__(self, data_path: str | os.PathLike[str] | None = None) -> None:
        path = Path(data_path) if data_path is not None else bundled_data_path()
        lib = ctypes.CDLL(_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        self._lib = lib
        if Espeak._initialised is None:
            if not (path / "phontab").is_file():
                raise EspeakError(f"not an espeak-ng-data folder (no phontab): {path}")
            # buflength 200 ms: fewer, larger callbacks.
            rate = lib.espeak_Initialize(
                AUDIO_OUTPUT_SYNCHRONOUS, 200, os.fsencode(path), INITIALIZE_DONT_EXIT
            )
            if rate <= 0:
                raise EspeakError(f"espeak_Initialize failed for data folder {path}")
            Espeak._initialised = path
            Espeak._rate = rate
        elif Espeak._initialised != path:
            raise EspeakError(
                f"eSpeak is already initialised with {Espeak._initialised} in this process"
            )
        self.sample_rate: int = Espeak._rate
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: C holds only a pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: ctypes.Array, n: int, events: int) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synth(
        self,
        text: str,
        voice: str,
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        word_gap: int = 0,
        seed: int | None = None,
    ) -> np.ndarray:
        """Synthesise one utterance.

        Args:
            text: UTF-8 text.
            voice: voice name, e.g. ``"en-us+usgm10001"`` (language file + variant file).
            rate: speaking rate in words per minute (80–450).
            pitch: eSpeak pitch parameter 0–99 (50 = the voice's own).
            pitch_range: eSpeak intonation range 0–99 (50 = the voice's own).
            word_gap: extra pause between words in units of 10 ms.
            seed: seed of eSpeak's noise generator (breath, Klatt aspiration) for repeatability.

        Returns:
            (T,) int16 samples at :attr:`sample_rate`.
        """
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"eSpeak has no voice {voice!r}")
        for param, value in (
            (RATE, rate),
            (PITCH, pitch),
            (RANGE, pitch_range),
            (WORDGAP, word_gap),
        ):
            lib.espeak_SetParameter(param, int(value), 0)
        if seed is not None:
            lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)
        data = text.encode("utf-8") + b"\0"
        self._chunks = []
        err = lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        if err != 0:
            raise EspeakError(f"espeak_Synth failed with code {err} for voice {voice!r}")
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks).astype(np.int16, copy=False)
