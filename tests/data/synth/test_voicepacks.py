"""Catalogue of recorded voices: speaker IDs, pools, and each package's file formats."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import _queen_bundle, write_fake_packages
from usgm.data.errors import DataError
from usgm.data.synth import recorded as rec
from usgm.data.synth import voicepacks as vp


def test_fillets_speaker_keeps_only_the_four_main_voices() -> None:
    assert vp.fillets_speaker(Path("x/city/cs/vit-m-hlava.ogg")) == "fcsm"
    assert vp.fillets_speaker(Path("x/city/nl/vit-v-auto.ogg")) == "fnlv"
    assert vp.fillets_speaker(Path("x/city/cs/vit-hs-radio.ogg")) is None  # minor character
    assert vp.fillets_speaker(Path("x/city/en/vit-m-hello.ogg")) is None  # other language
    assert vp.fillets_speaker(Path("x/share/bubbles.ogg")) is None  # sound effect


@pytest.mark.parametrize(
    ("name", "speaker"),
    [
        ("050001J1.SB", "fqjoe"),  # Joe in dialogue 05
        ("JOE00441.SB", "fqjoe"),  # Joe's remarks
        ("570023P2.SB", "fqfh"),  # the partner of dialogue 57: digits as letters
        ("0700A6P1.SB", "fqah"),
        ("C103E022.SB", None),  # cut scene: who speaks is not in the name
        ("129SSSSS.SB", None),
        ("ROOM1.PCX", None),
    ],
)
def test_fotaq_speaker_from_the_line_name(name: str, speaker: str | None) -> None:
    assert vp.fotaq_speaker(name) == speaker


def test_queen_table_round_trip_and_bad_bundles(tmp_path: Path) -> None:
    bundle = tmp_path / "queen.1c"
    _queen_bundle(bundle, {"050001J1.SB": b"abc", "ROOM1.PCX": b"\0" * 5})
    entries = vp.read_queen_table(bundle)
    assert [(n, s) for n, _, s in entries] == [("050001J1.SB", 3), ("ROOM1.PCX", 5)]
    data = bundle.read_bytes()
    assert data[entries[0][1] : entries[0][1] + 3] == b"abc"
    bad = tmp_path / "bad.1c"
    bad.write_bytes(b"RIFF" + data[4:])
    with pytest.raises(DataError, match=r"bad\.1c.*QTBL"):
        vp.read_queen_table(bad)
    bad.write_bytes(data[:12] + b"\0" + data[13:])  # uncompressed (Sound Blaster) lines
    with pytest.raises(DataError, match="compression type 0"):
        vp.read_queen_table(bad)
    bad.write_bytes(data[:40])  # the table is cut short
    with pytest.raises(DataError, match="truncated"):
        vp.read_queen_table(bad)
    table = bytearray(data)
    struct.pack_into(">I", table, 15 + 13, len(data))  # first entry points past the end
    bad.write_bytes(bytes(table))
    with pytest.raises(DataError, match=r"050001J1\.SB"):
        vp.read_queen_table(bad)


def test_speaker_ids_are_mixture_id_safe_and_pools_disjoint(tmp_path: Path) -> None:
    assert all(vp.is_speaker_id(s) for s in vp.POOLS)
    assert not any(vp.is_speaker_id(s) for s in ("pt_BR", "sr@latin", "f-1", "Fcsm", ""))
    assert len(vp.PACKAGES) == len(set(vp.PACKAGES)) == 8
    dev = {s for s, p in vp.POOLS.items() if p == "dev"}
    test = {s for s, p in vp.POOLS.items() if p == "test"}
    assert dev and test and not dev & test
    # Language folders become letters-only IDs.
    root = tmp_path / "kt"
    for lang in ("pt_BR", "sr@latin"):
        (root / lang).mkdir(parents=True)
        (root / lang / "a.ogg").write_bytes(b"x")
    assert sorted(vp._per_language("kt", "*")(root)) == ["ktptbr", "ktsrlatin"]


def _f0(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))
    return float(np.argmax(spec) * sr / (8 * len(x)))


def test_each_format_decodes_at_its_true_rate(tmp_path: Path) -> None:
    # The stand-ins write every speaker at its own known F0 (100 … 330 Hz in 40 steps, in the
    # order the fixture writes them): decoding at the wrong rate would move it.
    write_fake_packages(tmp_path / "pkgs", clips=1, extra=False)
    clips = vp.find_clips({p: tmp_path / "pkgs" / p for p in vp.PACKAGES})
    f0s = np.linspace(100.0, 330.0, 40)
    expected = {"drenjh": f0s[9], "fqjoe": f0s[12], "fqaf": f0s[13], "ktfr": f0s[16]}
    for spk, f0 in expected.items():
        x = rec._decode_clip(clips[spk][0], 8000)
        mid = x[len(x) // 2 - 1600 : len(x) // 2 + 1600]
        # The fundamental is the strongest partial of the stand-in voice (1/h amplitudes).
        assert _f0(mid, 8000) == pytest.approx(f0, rel=0.06), spk


def test_a_corrupt_line_names_the_file_and_byte_range(tmp_path: Path) -> None:
    bundle = tmp_path / "queen.1c"
    _queen_bundle(bundle, {"050001J1.SB": b"not an mp3 frame at all" * 10})
    (_, offset, size) = vp.read_queen_table(bundle)[0]
    with pytest.raises(DataError, match=f"queen.1c \\(bytes {offset}\\+{size}\\)"):
        rec._decode_clip(vp.Clip(bundle, offset, size), 8000)
