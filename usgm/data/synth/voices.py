"""Synthetic speakers: eSpeak voice variants drawn at random, in disjoint pools.

Each speaker is one variant file (pitch, formant scaling/strength/width, spectral tone, breath,
voicing, roughness, flutter, echo, intonation, optionally the Klatt synthesiser) on top of a base
language/accent, plus a personal speaking rate. Pools for train, dev, test and babble noise use
disjoint speaker IDs and are drawn from separate seeds, so one pool's size never changes another.

eSpeak silently ignores an unknown variant (it keeps the base voice); :func:`voice_f0s` measures
the median F0 of voices so the tests can check that the variants really change the voice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from usgm.data.synth.options import SynthOptions

POOLS = ("train", "dev", "test", "babble")
# Speaker IDs: 5 digits, the first naming the pool (train 1xxxx, dev 2xxxx, test 3xxxx, babble 9xxxx).
POOL_ID_BASE = {"train": 10000, "dev": 20000, "test": 30000, "babble": 90000}
_POOL_SEED_CODE = {"train": 1, "dev": 2, "test": 3, "babble": 4}

# Our language key -> (bundled file under espeak-ng-data/lang, language of the text it reads).
ENGLISH_ACCENTS: dict[str, str] = {
    "en-us": "gmw/en-US",
    "en": "gmw/en",
    "en-029": "gmw/en-029",
    "en-gb-scotland": "gmw/en-GB-scotland",
    "en-gb-x-gbclan": "gmw/en-GB-x-gbclan",
    "en-gb-x-gbcwmd": "gmw/en-GB-x-gbcwmd",
    "en-gb-x-rp": "gmw/en-GB-x-rp",
    "en-us-nyc": "gmw/en-US-nyc",
}
OTHER_LANGUAGES: dict[str, tuple[str, str]] = {
    "de": ("gmw/de", "de"),
    "es": ("roa/es", "es"),
    "es-419": ("roa/es-419", "es"),
    "fr": ("roa/fr", "fr"),
    "fr-be": ("roa/fr-BE", "fr"),
    "it": ("roa/it", "it"),
    "ru": ("zle/ru", "ru"),
    "nl": ("gmw/nl", "en"),  # accented English
    "pt-br": ("roa/pt-BR", "en"),
    "sv": ("gmq/sv", "en"),
}
LANGUAGE_FILES: dict[str, str] = {
    **ENGLISH_ACCENTS,
    **{k: v[0] for k, v in OTHER_LANGUAGES.items()},
}


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker.

    Attributes:
        spk_id: numeric ID (unique across pools).
        pool: ``train``, ``dev``, ``test`` or ``babble``.
        language: base voice key of :data:`LANGUAGE_FILES`.
        text_language: language of the words the speaker reads (a key of ``text.WORDS``).
        gender: ``male``, ``female`` or ``child`` (a label: the sound comes from the numbers).
        pitch: (base, top) F0 in Hz.
        formants: per eSpeak formant 0–8 (frequency %, strength %, width %).
        tone: spectral tone points ``(f1, a1, f2, a2, f3, a3)`` (Hz, 0–255).
        breath: breath-noise strength per formant 1–8 (all 0 = none).
        voicing: strength of voiced sounds, %.
        consonants: strengths of unvoiced and voiced-noise consonants, %.
        roughness: 0–7 (creak).
        flutter: pitch wavering (eSpeak's default is 2).
        echo: (delay ms, amplitude %).
        intonation: eSpeak intonation style 1–4.
        klatt: 0 for the default synthesiser, else the Klatt voice source number.
        rate: speaking rate, words per minute.
    """

    spk_id: int
    pool: str
    language: str
    text_language: str
    gender: str
    pitch: tuple[int, int]
    formants: tuple[tuple[int, int, int], ...]
    tone: tuple[int, ...]
    breath: tuple[int, ...]
    voicing: int
    consonants: tuple[int, int]
    roughness: int
    flutter: int
    echo: tuple[int, int]
    intonation: int
    klatt: int
    rate: int

    @property
    def variant(self) -> str:
        """Name of the variant file (``voices/!v/<variant>``)."""
        return f"usgm{self.spk_id}"

    @property
    def voice_name(self) -> str:
        """Name to pass to eSpeak: ``<language file>+<variant file>``."""
        return f"{self.language}+{self.variant}"

    def variant_text(self) -> str:
        """The eSpeak variant file (every line well under eSpeak's 120-character limit)."""
        lines = [
            "language variant",
            f"name {self.variant}",
            f"gender {'male' if self.gender == 'male' else 'female'}",
            f"pitch {self.pitch[0]} {self.pitch[1]}",
        ]
        lines += [f"formant {k} {f} {h} {w}" for k, (f, h, w) in enumerate(self.formants)]
        lines.append("tone " + " ".join(str(v) for v in self.tone))
        if any(self.breath):
            lines.append("breath " + " ".join(str(v) for v in self.breath))
        lines += [
            f"voicing {self.voicing}",
            f"consonants {self.consonants[0]} {self.consonants[1]}",
            f"roughness {self.roughness}",
            f"flutter {self.flutter}",
            f"intonation {self.intonation}",
        ]
        if self.echo[1] > 0:
            lines.append(f"echo {self.echo[0]} {self.echo[1]}")
        if self.klatt:
            lines.append(f"klatt {self.klatt}")
        return "\n".join(lines) + "\n"


def sample_speaker(
    rng: np.random.Generator, spk_id: int, pool: str, options: SynthOptions
) -> Speaker:
    """Draw one speaker's voice parameters.

    Args:
        rng: random generator.
        spk_id: the speaker's ID.
        pool: the pool it belongs to.
        options: generator options (language mix, Klatt and breathy shares).

    Returns:
        A :class:`Speaker`.
    """
    if rng.random() < options.english_fraction:
        keys = list(ENGLISH_ACCENTS)
        language = keys[rng.integers(len(keys))]
        text_language = "en"
    else:
        keys = list(OTHER_LANGUAGES)
        language = keys[rng.integers(len(keys))]
        native = OTHER_LANGUAGES[language][1]
        text_language = native if rng.random() < 0.8 else "en"

    gender = str(rng.choice(["male", "female", "child"], p=[0.47, 0.47, 0.06]))
    # F0 base (Hz) and vocal-tract scale (formant frequency factor), by speaker type.
    f0_lo, f0_hi, vt_lo, vt_hi = {
        "male": (70, 122, 0.88, 1.03),
        "female": (135, 200, 1.00, 1.16),
        "child": (200, 260, 1.14, 1.28),
    }[gender]
    # eSpeak's median F0 sits about 55 % of the way from base to top: these ranges give medians
    # of roughly 85–150 Hz (men), 165–245 Hz (women), 245–320 Hz (children).
    base = float(rng.uniform(f0_lo, f0_hi))
    top = base * float(rng.uniform(1.25, 1.6))
    scale = float(rng.uniform(vt_lo, vt_hi))
    formants = []
    for k in range(9):
        jitter = rng.uniform(0.95, 1.05) if 1 <= k <= 5 else 1.0
        formants.append(
            (
                round(100 * scale * jitter),
                round(rng.uniform(75, 125)),
                round(rng.uniform(80, 140)),
            )
        )
    tone = (
        int(rng.integers(450, 800)), int(rng.integers(130, 210)),
        int(rng.integers(1000, 1500)), int(rng.integers(100, 175)),
        int(rng.integers(1800, 2600)), int(rng.integers(70, 140)),
    )  # fmt: skip
    breathy = rng.random() < options.breath_fraction
    if breathy:
        level = rng.uniform(1, 7)
        breath = tuple(round(level * w) for w in (0.6, 0.8, 1, 1, 1, 1, 1, 0.8))
    else:
        breath = (0,) * 8
    return Speaker(
        spk_id=spk_id,
        pool=pool,
        language=language,
        text_language=text_language,
        gender=gender,
        pitch=(round(base), round(top)),
        formants=tuple(formants),
        tone=tone,
        breath=breath,
        voicing=round(rng.uniform(70, 95) if breathy else rng.uniform(88, 115)),
        consonants=(round(rng.uniform(75, 120)), round(rng.uniform(75, 120))),
        roughness=int(rng.integers(0, 6)),
        flutter=int(rng.integers(1, 7)),
        echo=(int(rng.integers(20, 120)), int(rng.integers(3, 15)))
        if rng.random() < 0.25
        else (0, 0),
        intonation=int(rng.choice([1, 2, 3, 4], p=[0.55, 0.2, 0.15, 0.1])),
        klatt=int(rng.integers(1, 4)) if rng.random() < options.klatt_fraction else 0,
        rate=int(rng.integers(135, 205)),
    )


def make_pools(seed: int, options: SynthOptions) -> dict[str, list[Speaker]]:
    """The four disjoint speaker pools of a dataset.

    Args:
        seed: the dataset's global seed.
        options: generator options (``options.speakers`` gives the pool sizes).

    Returns:
        ``{"train": [...], "dev": [...], "test": [...], "babble": [...]}``.
    """
    pools: dict[str, list[Speaker]] = {}
    for pool, size in zip(POOLS, options.speakers):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1000, _POOL_SEED_CODE[pool]]))
        base = POOL_ID_BASE[pool]
        pools[pool] = [sample_speaker(rng, base + i, pool, options) for i in range(size)]
    return pools


def babble_subpool(babble: list[Speaker], split: str) -> list[Speaker]:
    """The babble talkers used for one split: disjoint thirds (3:1:1) of the babble pool."""
    which = {"train": (0, 1, 2), "dev": (3,), "test": (4,)}[split]
    return [s for i, s in enumerate(babble) if i % 5 in which]


def estimate_f0(x: np.ndarray, sr: int) -> float:
    """Median F0 (Hz) of the voiced frames of ``x`` by autocorrelation; 0.0 when none is voiced.

    Crude but enough to tell voices apart (used to check that variants are applied).
    """
    x = np.asarray(x, dtype=np.float64)
    frame, hop = int(0.04 * sr), int(0.01 * sr)
    lo, hi = int(sr / 450), int(sr / 55)
    thresh = 0.1 * np.sqrt(np.mean(x**2)) if x.size else 0.0
    f0s = []
    for start in range(0, len(x) - frame, hop):
        seg = x[start : start + frame]
        if np.sqrt(np.mean(seg**2)) < thresh:
            continue
        seg = seg - seg.mean()
        ac = np.correlate(seg, seg, "full")[frame - 1 :]
        if ac[0] <= 0:
            continue
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:
            f0s.append(sr / lag)
    return float(np.median(f0s)) if f0s else 0.0


def voice_f0s(
    voice_data: str, voices: Sequence[str], text: str = "The quick brown fox jumps over the dog."
) -> list[float]:
    """Median F0 (Hz) of each voice reading ``text``.

    Initialises eSpeak with ``voice_data`` in *this* process: call it in a fresh process.
    """
    from usgm.data.synth.espeak import Espeak

    tts = Espeak(voice_data)
    return [
        estimate_f0(tts.synth(text, v, seed=0).astype(np.float64), tts.sample_rate) for v in voices
    ]
