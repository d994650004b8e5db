"""Synthetic speakers, eSpeak voice variants and the sentence generator."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from usgm.data.synth.espeak import bundled_data_path, make_data_dir
from usgm.data.synth.options import SynthOptions
from usgm.data.synth.text import WORDS, make_sentence
from usgm.data.synth.voices import LANGUAGE_FILES, POOLS, make_pools, voice_f0s


def _in_fresh_process(fn, *args):
    # eSpeak is a per-process singleton bound to one data folder: probe it in a spawned child.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result(timeout=120)


def _variant(name: str, pitch: tuple[int, int], scale: int) -> str:
    formants = "\n".join(f"formant {k} {scale} 100 100" for k in range(6))
    return f"language variant\nname {name}\npitch {pitch[0]} {pitch[1]}\n{formants}\n"


def test_variants_really_change_the_voice(tmp_path: Path):
    pools = make_pools(0, SynthOptions())
    probe = [pools["train"][i] for i in range(8)]
    variants = {s.variant: s.variant_text() for s in probe}
    variants |= {"lowtest": _variant("lowtest", (70, 90), 90)}
    variants |= {"hightest": _variant("hightest", (260, 300), 120)}
    data = make_data_dir(
        tmp_path / "espeak-ng-data",
        {k: LANGUAGE_FILES[k] for k in {"en-us", *(s.language for s in probe)}},
        variants,
    )
    names = ["en-us", "en-us+lowtest", "en-us+hightest", "en-us+nosuchvariant"]
    f0 = _in_fresh_process(voice_f0s, str(data), names + [s.voice_name for s in probe])
    base, low, high, unknown = f0[:4]
    assert 60 < low < 110 and 220 < high < 340, f0[:4]
    # eSpeak silently keeps the base voice for an unknown variant: that is why we check at all.
    assert unknown == pytest.approx(base, rel=0.05)
    # Sampled speakers: measured F0 follows the drawn pitch.
    expected = [s.pitch[0] for s in probe]
    assert all(v > 0 for v in f0[4:]), f0[4:]
    assert np.corrcoef(np.log(expected), np.log(f0[4:]))[0, 1] > 0.8, (expected, f0[4:])


def test_pools_are_disjoint_deterministic_and_independent():
    opts = SynthOptions()
    pools = make_pools(0, opts)
    ids = {pool: {s.spk_id for s in pools[pool]} for pool in POOLS}
    assert [len(ids[p]) for p in POOLS] == list(opts.speakers)
    for i, a in enumerate(POOLS):
        for b in POOLS[i + 1 :]:
            assert not ids[a] & ids[b], (a, b)
    assert make_pools(0, opts) == pools
    assert make_pools(1, opts)["dev"] != pools["dev"]
    # Another train pool size leaves the other pools unchanged.
    bigger = make_pools(0, SynthOptions(speakers=(300, 40, 40, 60)))
    assert bigger["dev"] == pools["dev"] and bigger["train"][:200] == pools["train"]
    # Variety: both sexes, several accents, a wide F0 spread.
    train = pools["train"]
    assert {s.gender for s in train} >= {"male", "female"}
    assert len({s.language for s in train}) >= 8
    f0 = [s.pitch[0] for s in train]
    assert min(f0) < 100 and max(f0) > 200


def test_variant_files_are_valid_for_espeak():
    for s in make_pools(3, SynthOptions())["babble"]:
        text = s.variant_text()
        assert s.variant == s.variant.lower() and len(s.variant) < 30
        assert text.startswith("language variant\n")
        assert max(len(line) for line in text.splitlines()) < 120  # eSpeak's line buffer
    for rel in LANGUAGE_FILES.values():
        assert (bundled_data_path() / "lang" / rel).is_file(), rel


def test_sentences_are_deterministic_and_sized():
    for lang in WORDS:
        a = make_sentence(np.random.default_rng(0), 12, lang)
        assert a == make_sentence(np.random.default_rng(0), 12, lang)
        assert 12 <= len(a.split()) <= 24 and a[-1] in ".?!"
    assert make_sentence(np.random.default_rng(0), 12) != make_sentence(
        np.random.default_rng(1), 12
    )
    with pytest.raises(ValueError, match="word list"):
        make_sentence(np.random.default_rng(0), 5, "xx")
