"""research/realism/bank_transport.py: the recorded-speech bank moves losslessly, in parts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, write_fake_packages
from usgm.data.synth import recorded as rec


@pytest.fixture(scope="module")
def bt():
    spec = importlib.util.spec_from_file_location(
        "bank_transport", ROOT / "research/realism/bank_transport.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bank_transport"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def packed(bt, tmp_path: Path) -> tuple[Path, list[Path]]:
    cache = tmp_path / "here"
    write_fake_packages(cache / "recorded/pkgs", clips=2)
    # A tiny part size: one speaker per part, so the bank arrives over several unpack calls.
    parts = bt.pack(tmp_path / "bank", part_mb=1e-6, cache=cache, log=lambda _: None)
    return cache, parts


def test_parts_rebuild_the_bank_bit_for_bit(bt, packed, tmp_path: Path) -> None:
    cache, parts = packed
    assert len(parts) > 2
    there = tmp_path / "there"
    bank = there / "recorded/bank-8000"
    assert not bt.unpack(parts[:1], there, log=lambda _: None)
    assert not (bank / "bank.json").exists()  # incomplete: ensure_bank would not take it
    assert bt.unpack(parts[1:], there, log=lambda _: None)
    # No packages on this side: only the installed bank can answer.
    moved = rec.ensure_bank(8000, cache=there)
    direct = rec.ensure_bank(8000, cache=cache)
    assert [(s.spk_id, s.pool, s.offsets) for s in moved] == [
        (s.spk_id, s.pool, s.offsets) for s in direct
    ]
    for m, d in zip(moved, direct, strict=True):
        np.testing.assert_array_equal(np.load(m.path), np.load(d.path))
    assert bt.unpack(parts[:1], there, log=lambda _: None)  # again: already installed


def test_damaged_part_is_refused_by_name(bt, packed, tmp_path: Path) -> None:
    _, parts = packed
    flac = sorted(parts[0].glob("*.flac"))[0]
    import soundfile as sf

    audio, sr = sf.read(flac, dtype="int16")
    audio[len(audio) // 2] ^= 1  # one flipped bit: still valid FLAC, wrong audio
    sf.write(flac, audio, sr, format="FLAC", subtype="PCM_16")
    with pytest.raises(ValueError, match=flac.name):
        bt.unpack(parts[:1], tmp_path / "there", log=lambda _: None)


def test_parts_of_another_bank_or_catalogue_are_refused(bt, packed, tmp_path: Path) -> None:
    _, parts = packed
    manifest = json.loads((parts[1] / bt.MANIFEST).read_text())
    (parts[1] / bt.MANIFEST).write_text(json.dumps({**manifest, "sample_rate": 16000}))
    with pytest.raises(ValueError, match="different banks"):
        bt.unpack(parts[:2], tmp_path / "there", log=lambda _: None)
    (parts[0] / bt.MANIFEST).write_text(json.dumps({**manifest, "catalogue": "0" * 10}))
    with pytest.raises(ValueError, match="pack it again"):
        bt.unpack(parts[:1], tmp_path / "there", log=lambda _: None)
    (parts[2] / bt.MANIFEST).unlink()
    assert bt.main(["unpack", str(parts[2]), "--cache", str(tmp_path / "there")]) == 2
