"""Recorded-speech source: package unpacking, bank building, rendering, and use in the corpus."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import write_fake_packages
from usgm.data.errors import DataError
from usgm.data.synth import make_dataset, read_info
from usgm.data.synth import recorded as rec
from usgm.data.synth.voicepacks import PACKAGES, find_clips

FAKE_SPEAKERS = sorted(
    ["fcsm", "fcsv", "fnlm", "fnlv", "hwbritish", "hwrussian", "hwdefaultes", "hwmobster",
     "hwpirate", "drenjh", "drend", "dresjh", "fqjoe", "fqaf", "ktde", "ktlt", "ktfr", "ktga",
     "klfr"]
)  # fmt: skip


def fake_clips(root: Path, clips: int = 3) -> dict:
    """Clips per speaker of the stand-in packages written under ``root``."""
    write_fake_packages(root, clips=clips)
    return find_clips({p: root / p for p in PACKAGES})


def test_find_clips_maps_every_package(tmp_path: Path) -> None:
    clips = fake_clips(tmp_path / "pkgs", clips=2)
    assert sorted(clips) == FAKE_SPEAKERS  # no hwrobot, no Drascula effects, no cut scenes
    assert len(clips["fcsm"]) == 3  # two lines + the too-short one (dropped when decoding)
    assert all(len(clips[s]) == 2 for s in ("fcsv", "hwpirate", "drend", "fqaf", "ktfr"))
    assert "dresd" not in clips  # the linked English line of Drascula is not Spanish speech
    assert len(clips["fqjoe"]) == 2 and all(c.size > 0 for c in clips["fqjoe"])
    assert all(c.raw_rate == 11025 for c in clips["drenjh"])


def _deb(path: Path, files: dict[str, bytes], compression: str = "xz") -> Path:
    """A minimal .deb: ar archive with debian-binary, control.tar.xz and data.tar.<comp>."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode=f"w:{compression}") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", b"not read"),
        (f"data.tar.{compression}", data.getvalue()),
    ]
    with open(path, "wb") as fh:
        fh.write(b"!<arch>\n")
        for name, payload in members:
            head = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(payload):<10}`\n"
            fh.write(head.encode() + payload + (b"\n" if len(payload) % 2 else b""))
    return path


def test_extract_deb_unpacks_the_data_archive(tmp_path: Path) -> None:
    deb = _deb(tmp_path / "p.deb", {"usr/share/a.txt": b"hello", "usr/b/c.bin": b"\x00\x01"})
    rec._extract_deb(deb, tmp_path / "out")
    assert (tmp_path / "out/usr/share/a.txt").read_bytes() == b"hello"
    assert (tmp_path / "out/usr/b/c.bin").read_bytes() == b"\x00\x01"


def test_extract_deb_rejects_a_non_package(tmp_path: Path) -> None:
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"PK\x03\x04 zip, not ar")
    with pytest.raises(DataError, match=r"bad\.deb"):
        rec._extract_deb(bad, tmp_path / "out")


def test_fetch_without_apt_names_packages_and_the_way_out(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(rec.shutil, "which", lambda _: None)
    with pytest.raises(DataError) as err:
        rec.fetch(tmp_path / "cache")
    msg = str(err.value)
    assert all(p in msg for p in PACKAGES)
    assert "recorded_fraction=0" in msg and str(tmp_path / "cache") in msg


def test_fetch_unpacks_debs_already_in_the_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(rec.shutil, "which", lambda _: None)  # must not need apt
    ogg = io.BytesIO()
    sf.write(ogg, np.sin(np.arange(8000) * 0.1) * 0.3, 22050, format="OGG", subtype="VORBIS")
    debs = tmp_path / "cache/recorded/debs"
    debs.mkdir(parents=True)
    files = {
        "fillets-ng-data-cs": "usr/share/games/fillets-ng/sound/lvl/cs/lvl-m-a.ogg",
        "fillets-ng-data-nl": "usr/share/games/fillets-ng/sound/lvl/nl/lvl-v-a.ogg",
        "hedgewars-data": "usr/share/games/hedgewars/Data/Sounds/voices/Pirate/Arr.ogg",
    }
    for package, name in files.items():
        # Only the voice folder of each package is unpacked.
        _deb(debs / f"{package}_1.0_all.deb", {name: ogg.getvalue(), "usr/bin/game": b"elf"})
    roots = rec.fetch(tmp_path / "cache", tuple(files))
    assert sorted(find_clips(roots)) == ["fcsm", "fnlv", "hwpirate"]
    assert not (roots["hedgewars-data"] / "usr/bin/game").exists()
    stamp = (roots["hedgewars-data"] / ".complete").stat().st_mtime_ns
    assert rec.fetch(tmp_path / "cache", tuple(files)) == roots  # unpacked once
    assert (roots["hedgewars-data"] / ".complete").stat().st_mtime_ns == stamp


def test_fetch_replaces_the_old_single_tree_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(rec.shutil, "which", lambda _: None)
    old = tmp_path / "cache/recorded/pkgs"
    (old / "usr/share").mkdir(parents=True)
    (old / ".complete").touch()  # bank version 2 layout: one tree for all packages
    with pytest.raises(DataError, match="hedgewars-data"):
        rec.fetch(tmp_path / "cache", ("hedgewars-data",))
    assert not (old / "usr").exists()


def test_locate_rejects_a_wrong_folder(tmp_path: Path) -> None:
    (tmp_path / "notaspeaker").mkdir()
    with pytest.raises(DataError, match=str(tmp_path)):
        rec.locate(tmp_path, tmp_path / "cache", print)


def test_bank_holds_trimmed_normalised_clips_and_is_reused(tmp_path: Path) -> None:
    clips = fake_clips(tmp_path / "pkgs", clips=2)
    bank = tmp_path / "bank"
    speakers = rec.build_bank(clips, bank, 8000)
    # The lone 0.5 s line of "ktga" is too little speech for a speaker.
    assert [s.spk_id for s in speakers] == [s for s in sorted(clips) if s != "ktga"]
    pools = {s.spk_id: s.pool for s in speakers}
    assert pools["hwbritish"] == pools["ktde"] == "dev" and pools["ktlt"] == "test"
    for spk in speakers:
        audio = np.load(spk.path)
        # The 800-sample Fillets clip is gone, so is KLettres' second copy of one recording.
        assert spk.n_clips == 2 and spk.offsets[-1] == len(audio)
        for k in range(spk.n_clips):
            clip = audio[spk.offsets[k] : spk.offsets[k + 1]].astype(float) / 32768
            assert np.max(np.abs(clip)) == pytest.approx(0.5, abs=1e-3)
            # 2000 samples of silence at 22.05 kHz were cut down to the 50 ms margin.
            assert np.flatnonzero(np.abs(clip) > 0.01)[0] <= 0.06 * 8000
    stamp = (bank / "bank.json").stat().st_mtime_ns
    assert rec.build_bank(clips, bank, 8000) == speakers
    assert (bank / "bank.json").stat().st_mtime_ns == stamp


def test_packed_folder_round_trips_through_recorded_dir(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**__import__("os").environ, "USGM_CACHE": str(tmp_path / "cache")}
    write_fake_packages(tmp_path / "cache/recorded/pkgs", clips=2)
    subprocess.run(
        [sys.executable, str(ROOT / "research/realism/pack_recorded.py"), "--out", str(tmp_path / "p")],
        check=True, env=env, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    packed = rec.ensure_bank(8000, recorded_dir=tmp_path / "p", cache=tmp_path / "c2")
    direct = rec.ensure_bank(8000, cache=tmp_path / "cache")
    assert [(s.spk_id, s.pool) for s in packed] == [(s.spk_id, s.pool) for s in direct]
    for p, d in zip(packed, direct, strict=True):
        # Lines are joined 8 to a file with 0.25 s pauses: same speech, plus the pauses.
        assert p.n_clips == 1 and d.n_clips == 2
        assert d.seconds < p.seconds < d.seconds + 0.3


def _f0(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def test_render_recorded_length_and_speed_shift_pitch(tmp_path: Path) -> None:
    sr = 8000
    tone = (0.4 * np.sin(2 * np.pi * 200 * np.arange(sr) / sr) * 32767).astype(np.int16)
    np.save(tmp_path / "s.npy", np.concatenate([tone, tone]))
    spk = rec.RecordedSpeaker("fcsm", "train", str(tmp_path / "s.npy"), (0, sr, 2 * sr), sr)
    rng = np.random.default_rng(0)
    plain = rec.render_recorded(spk, rng, sr, target_s=2.5, speed=1.0)
    fast = rec.render_recorded(spk, rng, sr, target_s=2.5, speed=1.2)
    assert len(plain) == len(fast) == int(2.5 * sr)
    assert _f0(plain[:sr], sr) == pytest.approx(200, abs=3)
    assert _f0(fast[:sr], sr) == pytest.approx(240, abs=3)
    with pytest.raises(DataError, match="8000 Hz"):
        rec.render_recorded(spk, rng, 16000, target_s=1.0, speed=1.0)


def _ids(root: Path, split: str) -> list[str]:
    meta = root / "wav8k/min/metadata" / f"mixture_{split}_mix_both.csv"
    with open(meta) as fh:
        return [row["mixture_ID"] for row in csv.DictReader(fh)]


def test_corpus_keeps_recorded_pools_per_split_and_people_distinct(tmp_path: Path) -> None:
    root = make_dataset(
        tmp_path / "c", n_train=24, n_dev=8, n_test=8, seed=5, num_workers=1,
        recorded_fraction=0.6, cache_dir=tmp_path / "cache",
        recorded_dir=_packed(tmp_path),
    )  # fmt: skip
    pools = {"train-360": set(), "dev": set(), "test": set()}
    for split, found in pools.items():
        ids = _ids(root, split)
        spk = [[part.split("-")[0] for part in mid.split("_")] for mid in ids]
        assert all(len(set(pair)) == 2 for pair in spk)  # different people in every mixture
        found |= {s for pair in spk for s in pair if not s.isdigit()}
        if split == "train-360":
            n_rec = sum(not s.isdigit() for pair in spk for s in pair)
            assert 0.3 < n_rec / (2 * len(ids)) < 0.9
    assert pools["dev"] <= {"hwbritish", "hwrussian", "ktde"} and pools["dev"]
    assert pools["test"] <= {"hwdefaultes", "hwmobster", "ktlt"} and pools["test"]
    assert pools["train-360"] and not pools["train-360"] & (pools["dev"] | pools["test"])
    info = read_info(root)
    assert info["recorded_speakers"]["hwmobster"]["pool"] == "test"
    # A recorded source has the level the LibriMix rules give every speaker.
    mid = next(m for m in _ids(root, "train-360") if not m.split("-")[0].isdigit())
    x, _ = sf.read(root / "wav8k/min/train-360/s1" / f"{mid}.wav")
    assert 1e-3 < np.sqrt(np.mean(x**2)) < 0.2


def _packed(tmp_path: Path) -> Path:
    """A per-speaker clip folder (the recorded_dir layout) made from the stand-in packages."""
    speakers = rec.build_bank(fake_clips(tmp_path / "pkgs"), tmp_path / "bank", 8000)
    out = tmp_path / "packed"
    for spk in speakers:
        (out / spk.spk_id).mkdir(parents=True)
        audio = np.load(spk.path)
        for k in range(spk.n_clips):
            line = audio[spk.offsets[k] : spk.offsets[k + 1]]
            sf.write(out / spk.spk_id / f"{k}.wav", line, 8000, subtype="PCM_16")
    return out


def test_recorded_fraction_zero_needs_no_recordings_and_keeps_espeak_output(tmp_path: Path) -> None:
    kw = dict(n_train=3, n_dev=1, n_test=1, seed=9, num_workers=1, recorded_fraction=0.0)
    a = make_dataset(tmp_path / "a", cache_dir=tmp_path / "empty-cache", **kw)
    b = make_dataset(
        tmp_path / "b", recorded_dir=_packed(tmp_path), recorded_splits=(),
        **{**kw, "recorded_fraction": 0.5},
    )  # fmt: skip
    assert not (tmp_path / "empty-cache").exists()
    for wav in sorted((a / "wav8k/min").rglob("*.wav")):
        assert wav.read_bytes() == (b / wav.relative_to(a)).read_bytes()
    assert json.loads((a / "DONE").read_text())["recorded_speakers"] == {}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("recorded_fraction", 1.5),
        ("recorded_splits", ("train", "eval")),
        ("recorded_speed", (0.3, 1)),
        ("recorded_gap", (0.4, 0.1)),
        ("same_recording", -0.1),
        ("shared_channel", 2.0),
        ("self_pair", 1.5),
        ("colour_match", 1.5),
        ("colour_candidates", 1),
    ],
)
def test_bad_recorded_options_name_the_key(tmp_path: Path, key: str, value) -> None:
    with pytest.raises(DataError, match=key):
        make_dataset(tmp_path / "x", n_train=1, **{key: value})


def test_installed_packages_need_voice_lines_not_just_folders(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "system"
    write_fake_packages(tmp_path / "pkgs", clips=1, extra=False)
    # hedgewars installed; KLettres' folder exists but holds no audio.
    hw = "usr/share/games/hedgewars/Data/Sounds/voices"
    (root / hw).parent.mkdir(parents=True)
    (tmp_path / "pkgs/hedgewars-data" / hw).rename(root / hw)
    (root / "usr/share/klettres/fr").mkdir(parents=True)
    (root / "usr/share/games/hedgewars/Data/Sounds/voices/Empty").mkdir()
    monkeypatch.setenv("USGM_SYSTEM_ROOT", str(root))
    assert rec.installed_packages() == {"hedgewars-data": root}
    (root / hw).rename(tmp_path / "gone")
    (root / hw / "Pirate").mkdir(parents=True)  # the folder without any voice pack
    assert rec.installed_packages() == {}


def test_an_undecodable_clip_is_skipped_and_reported(tmp_path: Path) -> None:
    clips = fake_clips(tmp_path / "pkgs", clips=2)
    broken = tmp_path / "broken.ogg"
    broken.write_bytes(b"OggS but not really" * 20)
    clips["hwpirate"] = [*clips["hwpirate"], rec.Clip(broken)]
    messages: list[str] = []
    speakers = rec.build_bank(clips, tmp_path / "bank", 8000, messages.append)
    assert {s.spk_id: s.n_clips for s in speakers}["hwpirate"] == 2
    assert any("skipped 1 undecodable" in m and "broken.ogg" in m for m in messages)


def test_bank_is_rebuilt_when_the_catalogue_changes(tmp_path: Path, monkeypatch) -> None:
    clips = fake_clips(tmp_path / "pkgs", clips=2)
    first = rec.build_bank(clips, tmp_path / "bank", 8000)
    assert {s.spk_id: s.pool for s in first}["hwpirate"] == "train"
    monkeypatch.setitem(rec.POOLS, "hwpirate", "dev")  # e.g. a new release moves a speaker
    assert rec._load_bank(tmp_path / "bank", 8000) is None
    again = rec.build_bank(clips, tmp_path / "bank", 8000)
    assert {s.spk_id: s.pool for s in again}["hwpirate"] == "dev"


def test_recorded_dir_follows_links_and_skips_broken_ones(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    sf.write(store / "a.wav", np.zeros(800), 8000, subtype="PCM_16")
    spk = tmp_path / "clips" / "abc"
    spk.mkdir(parents=True)
    (spk / "a.wav").symlink_to(store / "a.wav")  # a folder of links to the real files
    (spk / "gone.wav").symlink_to(store / "missing.wav")
    clips = rec.folder_clips(tmp_path / "clips")
    assert [c.path.name for c in clips["abc"]] == ["a.wav"]


def test_render_recorded_gap_sets_the_pause_between_clips(tmp_path: Path) -> None:
    sr = 8000
    tone = (0.4 * np.sin(2 * np.pi * 200 * np.arange(sr // 2) / sr) * 32767).astype(np.int16)
    np.save(tmp_path / "s.npy", np.concatenate([tone, tone]))
    spk = rec.RecordedSpeaker("fcsm", "train", str(tmp_path / "s.npy"), (0, sr // 2, sr), sr)

    def longest_zero_run(x: np.ndarray) -> int:
        runs, cur = [0], 0
        for v in x == 0:
            cur = cur + 1 if v else 0
            runs.append(cur)
        return max(runs)

    rng = np.random.default_rng(0)
    wide = rec.render_recorded(spk, rng, sr, target_s=3.0, speed=1.0, gap_s=(0.3, 0.3))
    none = rec.render_recorded(spk, rng, sr, target_s=3.0, speed=1.0, gap_s=(0.0, 0.0))
    assert int(0.3 * sr) <= longest_zero_run(wide) <= int(0.3 * sr) + 1  # + sin(0) of a clip
    assert longest_zero_run(none) <= 2  # zero crossings of the tone only


def test_same_recording_pairs_people_of_one_recording_source(tmp_path: Path) -> None:
    from usgm.data.synth.voicepacks import recording_group

    packed = _packed(tmp_path)
    root = make_dataset(
        tmp_path / "c", n_train=30, n_dev=4, n_test=4, seed=2, num_workers=1,
        cache_dir=tmp_path / "cache", recorded_dir=packed,
        same_recording=1.0, shared_channel=1.0,
    )  # fmt: skip
    train = {s.spk_id for s in rec.ensure_bank(8000, packed, tmp_path / "cache")
             if s.pool == "train"}  # fmt: skip
    checked = 0
    for mid in _ids(root, "train-360"):
        first, second = (part.split("-")[0] for part in mid.split("_"))
        group = recording_group(first)
        mates = {s for s in train if s != first and recording_group(s) == group}
        if group is not None and mates:
            assert second in mates
            checked += 1
    assert checked >= 10
    assert read_info(root)["options"]["shared_channel"] == 1.0


def test_shared_channel_draws_give_every_source_the_same_chain() -> None:
    """The worker's shared chain: one seed, a fresh generator per source → identical filters."""
    from usgm.data.synth.options import SynthOptions
    from usgm.data.synth.speech import apply_channel

    opts = SynthOptions(level_db=0.0, room_tone_db=None, codec=0.0, reverb=1.0, band_limit=1.0)
    impulse = np.zeros(4000)
    impulse[0] = 1.0
    a = apply_channel(impulse, np.random.default_rng(11), 8000, opts)
    b = apply_channel(impulse, np.random.default_rng(11), 8000, opts)
    c = apply_channel(impulse, np.random.default_rng(12), 8000, opts)
    np.testing.assert_allclose(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_recording_groups_follow_the_speaker_id_prefix() -> None:
    from usgm.data.synth.voicepacks import recording_group

    assert recording_group("fqjoe") == recording_group("fqaf") == "fotaq"
    assert recording_group("drenjh") != recording_group("dresjh")
    assert recording_group("hwpirate") == "hedgewars"
    assert recording_group("ktfr") is None and recording_group("klfr") is None


def test_self_pair_repeats_the_first_person_at_another_speed(tmp_path: Path) -> None:
    root = make_dataset(
        tmp_path / "c", n_train=12, n_dev=2, n_test=2, seed=4, num_workers=1,
        cache_dir=tmp_path / "cache", recorded_dir=_packed(tmp_path), self_pair=1.0,
    )  # fmt: skip
    for split in ("train-360", "dev", "test"):
        for mid in _ids(root, split):
            first, second = (part.split("-")[0] for part in mid.split("_"))
            assert first == second and not first.isdigit()
    assert read_info(root)["options"]["self_pair"] == 1.0


def test_self_pair_speed_factors_keep_their_distance() -> None:
    from usgm.data.synth.worker import SELF_PAIR_RATIO, _speed_apart

    span = (0.85, 1.2)
    for seed in range(20):
        first = _speed_apart(np.random.default_rng(seed), span, [])
        # Without earlier factors it is the plain uniform draw it always was.
        assert first == np.random.default_rng(seed).uniform(*span)
        second = _speed_apart(np.random.default_rng(seed + 100), span, [first])
        assert span[0] <= second <= span[1]
        assert abs(np.log(second / first)) >= np.log(SELF_PAIR_RATIO) - 1e-12
    # A span too narrow for the ratio: the farthest try, still inside the span.
    got = _speed_apart(np.random.default_rng(0), (0.99, 1.01), [1.0])
    assert 0.99 <= got <= 1.01 and abs(got - 1.0) > 0.005


def _colour_gap(root: Path) -> float:
    """Mean colour distance between the two sources of each training mixture (dB)."""
    from usgm.data.synth.dsp import colour_distance

    split = root / "wav8k/min/train-360"
    gaps = []
    for mid in _ids(root, "train-360"):
        a, b = (sf.read(split / s / f"{mid}.wav")[0] for s in ("s1", "s2"))
        gaps.append(colour_distance(a, b))
    return float(np.mean(gaps))


def test_colour_match_pairs_people_closer_in_colour(tmp_path: Path) -> None:
    packed = _packed(tmp_path)
    kw = dict(n_train=24, n_dev=2, n_test=2, seed=6, num_workers=1,
              cache_dir=tmp_path / "cache", recorded_dir=packed)  # fmt: skip
    plain = make_dataset(tmp_path / "plain", **kw)
    matched = make_dataset(tmp_path / "matched", colour_match=1.0, colour_candidates=6, **kw)
    assert _colour_gap(matched) < 0.8 * _colour_gap(plain)
    for mid in _ids(matched, "train-360"):  # still two different people
        first, second = (part.split("-")[0] for part in mid.split("_"))
        assert first != second
    info = read_info(matched)["options"]
    assert info["colour_match"] == 1.0 and info["colour_candidates"] == 6


def test_folder_speaker_id_spells_digits_as_letters() -> None:
    assert rec.folder_speaker_id("103") == "bad"
    assert rec.folder_speaker_id("p225") == "pccf"
    assert rec.folder_speaker_id("Ann-Marie_2") == "annmariec"
    assert all(rec.is_speaker_id(rec.folder_speaker_id(n)) for n in ("0", "19", "VCTK_p1"))


def _corpus(root: Path, layout: dict[str, list[str]], seconds: float = 1.5) -> Path:
    """A speech corpus of one's own: ``<split>/<speaker>/<chapter>/<utterance>.flac``."""
    rng = np.random.default_rng(0)
    for split, speakers in layout.items():
        for k, name in enumerate(speakers):
            folder = root / split / name / "ch1"
            folder.mkdir(parents=True)
            t = np.arange(int(seconds * 8000)) / 8000
            x = 0.3 * np.sin(2 * np.pi * (150 + 40 * k) * t) + 0.01 * rng.standard_normal(len(t))
            sf.write(folder / f"{name}-ch1-0000.flac", x, 8000, subtype="PCM_16")
    return root


def test_recorded_dir_split_folders_are_the_pools(tmp_path: Path) -> None:
    root = _corpus(
        tmp_path / "corpus", {"train": ["103", "1034", "p225"], "dev": ["2"], "test": ["Zed"]}
    )
    speakers = rec.ensure_bank(8000, recorded_dir=root, cache=tmp_path / "c")
    expect = [("bad", "train"), ("bade", "train"), ("c", "dev"), ("pccf", "train"), ("zed", "test")]
    assert [(s.spk_id, s.pool) for s in speakers] == expect
    assert all(s.seconds == pytest.approx(1.5, abs=0.2) for s in speakers)  # found one level down
    again = rec.ensure_bank(8000, recorded_dir=root, cache=tmp_path / "c")  # from bank.json
    assert [(s.spk_id, s.pool) for s in again] == expect
    # The same audio as a flat folder of speaker IDs: the pools of voicepacks.POOLS (train).
    flat = tmp_path / "flat"
    for s in speakers:
        (flat / s.spk_id).mkdir(parents=True)
        sf.write(flat / s.spk_id / "a.wav", np.load(s.path), 8000, subtype="PCM_16")
    assert {s.pool for s in rec.ensure_bank(8000, recorded_dir=flat, cache=tmp_path / "c")} == {
        "train"
    }


def test_recorded_dir_split_folders_reject_clashes_and_empty_splits(tmp_path: Path) -> None:
    clash = _corpus(tmp_path / "clash", {"train": ["ab"], "dev": ["AB"]})
    with pytest.raises(DataError, match=r"train/ab.*dev/AB"):
        rec.ensure_bank(8000, recorded_dir=clash, cache=tmp_path / "c")
    empty = _corpus(tmp_path / "empty", {"train": ["ab"]})
    (empty / "test" / "cd").mkdir(parents=True)  # a speaker folder without audio
    with pytest.raises(DataError, match=str(empty / "test")):
        rec.ensure_bank(8000, recorded_dir=empty, cache=tmp_path / "c")


def test_corpus_from_split_folders_holds_out_their_people(tmp_path: Path) -> None:
    corpus = _corpus(
        tmp_path / "corpus",
        {"train": ["11", "12", "13"], "dev": ["21", "22"]},  # no test/: eSpeak there
    )
    messages: list[str] = []
    rec.locate(corpus, tmp_path / "cache", messages.append)
    assert any("no test/ folder" in m for m in messages)
    root = make_dataset(
        tmp_path / "c", n_train=6, n_dev=3, n_test=2, seed=3, num_workers=1,
        recorded_fraction=1.0, cache_dir=tmp_path / "cache", recorded_dir=corpus,
    )  # fmt: skip
    people = {}
    for split in ("train-360", "dev", "test"):
        spk = [part.split("-")[0] for mid in _ids(root, split) for part in mid.split("_")]
        people[split] = {s for s in spk if not s.isdigit()}
    assert people["train-360"] == {"bb", "bc", "bd"}
    assert people["dev"] == {"cb", "cc"}
    assert people["test"] == set()  # every test source is an eSpeak speaker
    assert read_info(root)["recorded_speakers"]["cb"]["pool"] == "dev"
