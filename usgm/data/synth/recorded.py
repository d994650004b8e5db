"""Recorded human speech as a second speech source of the default corpus.

Formant speech alone does not teach a separator what real voices look like (issue 5: a model
trained on eSpeak only scored below 0 dB on real speech). The default corpus therefore mixes in
real recorded voices from Debian packages (games and KDE learning games; the catalogue is
:mod:`usgm.data.synth.voicepacks`), fetched on demand with ``apt-get download`` (no root needed)
into a cache; usgm ships none of the audio.

Lookup order: an explicit ``recorded_dir``; else per package the installed copy, or the cache
(``$USGM_CACHE`` or ``~/.cache/usgm``), or a download into the cache. A ``recorded_dir`` holds
either one sub-folder of clips per speaker ID (``research/realism/pack_recorded.py`` writes this; the
speakers keep the pools of :data:`voicepacks.POOLS`, others train), or ``train/``, ``dev/`` and
``test/`` with one sub-folder per speaker each, audio at any depth below it (a corpus of your
own, e.g. LibriSpeech's ``<speaker>/<chapter>/*.flac``): the split folders are the pools, so
validation and test see held-out people.

The clips are decoded once per sample rate into a *bank*: one int16 ``.npy`` per speaker (clips
back to back, trimmed of leading/trailing silence, duplicates dropped) plus ``bank.json`` with
the clip offsets. The worker processes memory-map it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usgm.data.errors import DataError
from usgm.data.synth.options import SynthOptions
from usgm.data.synth.voicepacks import (
    DOWNLOAD_BYTES,
    PACKAGES,
    POOLS,
    SOURCES,
    Clip,
    audio_files,
    find_clips,
    is_speaker_id,
    pool_of,
    speaker_rules,
)

# Bump when a reader's output changes; catalogue, speaker-table and limit changes are caught by
# catalogue_key().
BANK_VERSION = 3
_MIN_CLIP_S = 0.4
# Speakers with less usable speech (a lone line) are dropped; long ones are capped so that one
# person's lines do not dominate the bank (speakers are drawn uniformly, clips within a speaker).
MIN_SPEAKER_S = 1.0
MAX_SPEAKER_S = 1200.0


class RecordedUnavailable(DataError):
    """The recorded-voice packages cannot be had on this machine: no ``apt-get``, or it failed.

    The generator falls back to eSpeak-only data on this error (and only on it) unless recorded
    voices were asked for explicitly; damaged or unreadable recordings are other DataErrors.

    Attributes:
        reason: short cause for a one-line message, starting with ``apt-get not found`` or
            ``apt-get download failed``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def download_size(packages: tuple[str, ...]) -> int:
    """Bytes that ``apt-get download`` of ``packages`` fetches (:data:`voicepacks.DOWNLOAD_BYTES`)."""
    return sum(DOWNLOAD_BYTES.get(p, 0) for p in packages)


def _apt_download(packages: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``apt-get download packages`` into ``cwd`` (one function, so tests can stand in for it)."""
    return subprocess.run(
        ["apt-get", "download", *packages], cwd=cwd, capture_output=True, text=True
    )


def catalogue_key() -> str:
    """Fingerprint of what a bank holds: reader version, packages, speaker tables, pools, limits.

    Stored in ``bank.json`` and in a generated corpus's ``DONE``; a different key means a stale
    bank (rebuilt) or a stale corpus (regenerated).
    """
    spec = {
        "version": BANK_VERSION,
        "sources": [[s.package, s.folder] for s in SOURCES],
        "speakers": speaker_rules(),
        "pools": sorted(POOLS.items()),
        "limits": [_MIN_CLIP_S, MIN_SPEAKER_S, MAX_SPEAKER_S],
    }
    return hashlib.sha1(json.dumps(spec).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RecordedSpeaker:
    """One recorded person in a decoded bank.

    Attributes:
        spk_id: short ID used in mixture IDs (letters only: ``fcsm``, ``hwpirate`` …).
        pool: ``train``, ``dev`` or ``test`` (:data:`voicepacks.POOLS`, or the split folder of
            a ``recorded_dir``).
        path: int16 ``.npy`` file with every clip of the speaker back to back.
        offsets: clip boundaries in samples, ``len(clips) + 1`` increasing values from 0.
        sample_rate: rate of the bank, Hz.
    """

    spk_id: str
    pool: str
    path: str
    offsets: tuple[int, ...]
    sample_rate: int

    @property
    def n_clips(self) -> int:
        return len(self.offsets) - 1

    @property
    def seconds(self) -> float:
        return self.offsets[-1] / self.sample_rate


def default_cache() -> Path:
    """``$USGM_CACHE`` if set, else ``~/.cache/usgm``."""
    env = os.environ.get("USGM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "usgm"


def folder_clips(folder: Path) -> dict[str, list[Clip]]:
    """Clips per speaker in a plain folder: one sub-folder of audio files per speaker ID."""
    return {
        d.name: [Clip(f) for f in files]
        for d in sorted(folder.iterdir())
        if d.is_dir() and is_speaker_id(d.name)
        and (files := audio_files(d))
    }  # fmt: skip


# Pools of a recorded_dir with split folders, under these names.
SPLIT_FOLDERS = ("train", "dev", "test")


def folder_speaker_id(name: str) -> str:
    """The speaker ID of a corpus folder name: lower-case letters, digits spelt as letters.

    Mixture IDs join speaker IDs with ``_`` and ``-`` and tell eSpeak speakers by their digits,
    so a recorded ID is letters only: ``103`` → ``bad``, ``p225`` → ``pccf``.
    """
    return "".join(
        chr(ord("a") + int(c)) if c.isdigit() else c.lower()
        for c in name if c.isascii() and c.isalnum()
    )  # fmt: skip


def has_split_folders(folder: Path) -> bool:
    """Whether ``folder`` is laid out as ``train/``, ``dev/``, ``test/`` (the train one at least)."""
    return (folder / "train").is_dir()


def split_folder_clips(folder: Path) -> tuple[dict[str, list[Clip]], dict[str, str]]:
    """Clips and pool per speaker of a corpus laid out as ``<split>/<speaker>/**/<audio>``.

    Returns:
        ``(clips, pools)``: clips per speaker ID (:func:`folder_speaker_id` of the folder name),
        and the pool (``train``, ``dev`` or ``test``) of each.

    Raises:
        DataError: two speaker folders map to one ID, or a split holds no speaker with audio.
    """
    clips: dict[str, list[Clip]] = {}
    pools: dict[str, str] = {}
    where: dict[str, Path] = {}
    for split in SPLIT_FOLDERS:
        if not (folder / split).is_dir():
            continue
        for d in sorted(p for p in (folder / split).iterdir() if p.is_dir()):
            if not (files := audio_files(d, "**/*")):
                continue
            spk = folder_speaker_id(d.name)
            if not spk:
                raise DataError(f"recorded_dir: speaker folder {d} has no letters or digits")
            if spk in where:
                raise DataError(
                    f"recorded_dir: speaker folders {where[spk]} and {d} map to one speaker "
                    f"ID {spk!r}; rename one"
                )
            clips[spk], pools[spk], where[spk] = [Clip(f) for f in files], split, d
    for split in SPLIT_FOLDERS:
        if (folder / split).is_dir() and split not in pools.values():
            raise DataError(f"recorded_dir: {folder / split} holds no speaker folder with audio")
    return clips, pools


def _extract_deb(deb: Path, dest: Path, prefix: str = "") -> None:
    """Unpack a .deb's data archive (the members under ``prefix``) into ``dest``.

    An own ar reader, so dpkg is not needed.
    """
    with open(deb, "rb") as fh:
        if fh.read(8) != b"!<arch>\n":
            raise DataError(f"{deb}: not a Debian package (bad ar header)")
        while header := fh.read(60):
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            data_start = fh.tell()
            if name.startswith("data.tar"):
                if name.endswith(".zst"):
                    raise DataError(f"{deb}: zstd data archive; unpack it with `dpkg -x`")
                with tarfile.open(fileobj=_Slice(fh, data_start, size), mode="r|*") as tar:
                    for member in tar:
                        if member.name.lstrip("./").startswith(prefix):
                            tar.extract(member, dest, filter="data")
                return
            fh.seek(data_start + size + (size & 1))
    raise DataError(f"{deb}: no data.tar member")


class _Slice:
    """Read-only file view of ``size`` bytes from ``start`` (for tarfile's stream mode)."""

    def __init__(self, fh, start: int, size: int) -> None:
        self.fh, self.left = fh, size
        fh.seek(start)

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.fh.read(n)
        self.left -= len(data)
        return data


def fetch(
    cache: Path, packages: tuple[str, ...] = PACKAGES, log: Callable[[str], None] = lambda _: None
) -> dict[str, Path]:
    """Download and unpack ``packages`` (voice folders only) into ``cache/recorded/pkgs/<package>``.

    Returns:
        Unpacked root per package (:func:`voicepacks.find_clips` reads them).

    Raises:
        RecordedUnavailable: ``apt-get`` missing or failing (the message says how to get the
            files).
    """
    root = cache / "recorded"
    pkgs = root / "pkgs"
    if (pkgs / ".complete").is_file():  # one tree of all packages (bank version 2): re-unpack
        shutil.rmtree(pkgs, ignore_errors=True)
    roots = {p: pkgs / p for p in packages}
    todo = [p for p in packages if not (roots[p] / ".complete").is_file()]
    if not todo:
        return roots
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in todo if not any(debs.glob(f"{p}_*.deb"))]
    if missing:
        how = (
            f"get them on a Debian/Ubuntu machine with `apt-get download {' '.join(missing)}` "
            f"and put the .deb files into {debs}, or install them (`apt install "
            f"{' '.join(missing)}`), or pass recorded_dir=<a folder of per-speaker clips "
            "(research/realism/pack_recorded.py)>, or generate eSpeak-only data with recorded_fraction=0"
        )
        if shutil.which("apt-get") is None:
            raise RecordedUnavailable(
                f"recorded speech: packages {', '.join(missing)} needed; {how}", "apt-get not found"
            )
        # Said before the download starts: it is the one large thing a first run fetches.
        log(
            f"downloading {len(missing)} Debian package(s) of recorded voices, "
            f"{download_size(tuple(missing)) / 1e6:.0f} MB ({', '.join(missing)}), into {debs} "
            "(one-time)"
        )
        proc = _apt_download(missing, debs)
        failed = [p for p in missing if not any(debs.glob(f"{p}_*.deb"))]
        if proc.returncode != 0 or failed:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RecordedUnavailable(
                f"recorded speech: `apt-get download` failed for {', '.join(failed or missing)} "
                f"({tail[0]}; empty package lists need `apt-get update` first); {how}",
                f"apt-get download failed: {tail[0]}",
            )
    folders = {s.package: s.folder for s in SOURCES}
    pkgs.mkdir(parents=True, exist_ok=True)
    for package in todo:
        tmp = Path(tempfile.mkdtemp(prefix=f"{package}.partial-", dir=pkgs))
        try:
            _extract_deb(sorted(debs.glob(f"{package}_*.deb"))[-1], tmp, folders[package])
            (tmp / ".complete").touch()
            shutil.rmtree(roots[package], ignore_errors=True)
            tmp.rename(roots[package])
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return roots


@contextlib.contextmanager
def _cache_lock(cache: Path):
    """One process at a time fetches and decodes into ``cache/recorded`` (POSIX file lock)."""
    path = cache / "recorded" / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def installed_packages() -> dict[str, Path]:
    """Packages of :data:`voicepacks.SOURCES` installed on this system.

    The system root is ``/``, or ``$USGM_SYSTEM_ROOT`` (the test suite points it at an empty
    folder).
    """
    root = Path(os.environ.get("USGM_SYSTEM_ROOT", "/"))
    return {
        s.package: root
        for s in SOURCES
        if (root / s.folder).is_dir() and any(s.find(root / s.folder).values())
    }


def locate(
    recorded_dir: str | os.PathLike[str] | None, cache: Path, log
) -> tuple[dict[str, list[Clip]], dict[str, str] | None]:
    """Clips per speaker: from ``recorded_dir``, or the installed / cached / fetched packages.

    Returns:
        ``(clips, pools)``: clips per speaker ID, and the pool of each when ``recorded_dir``
        has split folders (else None: :func:`voicepacks.pool_of` decides).
    """
    if recorded_dir is not None:
        folder = Path(recorded_dir).expanduser()
        if folder.is_dir() and has_split_folders(folder):
            clips, pools = split_folder_clips(folder)
            for split in SPLIT_FOLDERS:
                if split not in pools.values():
                    log(f"recorded_dir {folder}: no {split}/ folder, so the {split} split's "
                        "sources are eSpeak speakers")  # fmt: skip
            return clips, pools
        clips = folder_clips(folder) if folder.is_dir() else {}
        if not clips:
            raise DataError(
                f"recorded_dir {folder}: expected one sub-folder of clips per speaker ID "
                "(lower-case letters, e.g. fcsm, hwpirate), as research/realism/pack_recorded.py "
                "writes, or train/, dev/ and test/ folders with one sub-folder per speaker"
            )
        return clips, None
    roots = installed_packages()
    missing = tuple(p for p in PACKAGES if p not in roots)
    if missing:
        roots |= fetch(cache, missing, log)
    return find_clips(roots), None


def available_offline(sr: int, cache: str | os.PathLike[str] | None = None) -> bool:
    """Whether the default recorded voices can be had at ``sr`` without downloading anything.

    True when the decoded bank is in the cache, or every package is installed, unpacked in the
    cache or present there as a ``.deb``. Cheap (no decoding): a corpus built without recorded
    voices uses it to decide whether it should now be rebuilt with them.
    """
    cache_dir = Path(cache).expanduser() if cache is not None else default_cache()
    if _load_bank(cache_dir / "recorded" / f"bank-{sr}", sr) is not None:
        return True
    root = cache_dir / "recorded"
    installed = installed_packages()
    return all(
        p in installed
        or (root / "pkgs" / p / ".complete").is_file()
        or any((root / "debs").glob(f"{p}_*.deb"))
        for p in PACKAGES
    )


def _decode_clip(clip: Clip, sr: int, data: bytes | None = None) -> np.ndarray:
    """One line as float64 at ``sr``, trimmed of leading and trailing silence.

    ``data``: the clip's bytes when the caller has read them already.
    """
    import soundfile as sf

    from usgm.data.synth import dsp

    if data is None:
        data = _read_bytes(clip)
    try:
        if clip.raw_rate:
            x = (np.frombuffer(data, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
            rate = clip.raw_rate
        else:
            y, rate = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
            x = y.mean(axis=1)
    except (RuntimeError, ValueError, OSError, sf.LibsndfileError) as exc:
        where = f"{clip.path} (bytes {clip.offset}+{clip.size})" if clip.size >= 0 else clip.path
        raise DataError(f"recorded speech: cannot decode {where}: {exc}") from exc
    x = dsp.resample(x, rate, sr)
    # A fixed 50 ms margin (no random draw: the bank is the same wherever it is built); recorded
    # clips carry their own room noise, hence the higher threshold than for eSpeak's silence.
    return dsp.trim_silence(x, sr, np.random.default_rng(0), pad_s=(0.05, 0.05), threshold=0.02)


def _read_bytes(clip: Clip) -> bytes:
    try:
        with open(clip.path, "rb") as fh:
            fh.seek(clip.offset)
            return fh.read(clip.size)
    except OSError as exc:
        raise DataError(f"recorded speech: cannot read {clip.path}: {exc}") from exc


def _load_bank(bank: Path, sr: int) -> list[RecordedSpeaker] | None:
    """The speakers of an already decoded bank at ``sr``, or None when there is none (yet)."""
    try:  # absent, or replaced by another process right now: (re)build under the lock
        info = json.loads((bank / "bank.json").read_text())
    except (OSError, ValueError):
        return None
    if info.get("catalogue") != catalogue_key() or info.get("sample_rate") != sr:
        return None
    return _speakers(bank, info)


def build_bank(
    clips: dict[str, list[Clip]],
    bank: Path,
    sr: int,
    log: Callable[[str], None] = lambda _: None,
    pools: dict[str, str] | None = None,
) -> list[RecordedSpeaker]:
    """Decode ``clips`` (per speaker ID) into a bank at ``sr``, once.

    Clips are peak-normalised to 0.5 each (the generator sets loudness later) and stored in
    sorted order, so the bank is identical wherever it is built. Repeated recordings are kept
    once; a speaker keeps at most :data:`MAX_SPEAKER_S` and needs :data:`MIN_SPEAKER_S`.
    ``pools`` (pool per speaker ID) is kept in the bank; without it
    :func:`voicepacks.pool_of` gives each speaker's pool.
    """
    if (done := _load_bank(bank, sr)) is not None:
        return done
    log(f"decoding recorded speech of {len(clips)} speakers at {sr} Hz into {bank} (one-time)")
    audio: dict[str, list[np.ndarray]] = {}
    seen: set[bytes] = set()
    bad: list[str] = []
    for spk, found in sorted(clips.items()):
        parts, total = [], 0
        for clip in found:
            if total >= MAX_SPEAKER_S * sr:
                break
            try:
                data = _read_bytes(clip)
                # Some packages hold the same recording under several names: keep it once.
                if (key := hashlib.sha1(data).digest()) in seen:
                    continue
                seen.add(key)
                x = _decode_clip(clip, sr, data)
            except DataError as err:  # one damaged line among thousands: skip it, say so below
                bad.append(str(err))
                continue
            if len(x) >= _MIN_CLIP_S * sr and np.any(x):
                parts.append(np.round(x / np.max(np.abs(x)) * 0.5 * 32767).astype(np.int16))
                total += len(x)
        if total >= MIN_SPEAKER_S * sr:
            audio[spk] = parts
    if bad:
        log(f"skipped {len(bad)} undecodable clip(s), e.g. {bad[0]}")
    if not audio:
        raise DataError(
            f"recorded speech: no speaker with {MIN_SPEAKER_S:g} s of usable clips "
            f"(clips shorter than {_MIN_CLIP_S} s are skipped)"
        )
    bank.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{bank.name}.partial-", dir=bank.parent))
    try:
        speakers = {}
        for spk, parts in audio.items():
            np.save(tmp / f"{spk}.npy", np.concatenate(parts))
            speakers[spk] = np.cumsum([0] + [len(p) for p in parts]).tolist()
        info = {"catalogue": catalogue_key(), "sample_rate": sr, "speakers": speakers}
        if pools is not None:
            info["pools"] = {spk: pools[spk] for spk in speakers}
        (tmp / "bank.json").write_text(json.dumps(info))
        # Move an old bank aside before the new one takes its name: readers never see a
        # half-deleted folder (generations still mapping its files keep them until they exit).
        old = bank.with_name(f"{bank.name}.old-{os.getpid()}")
        if bank.exists():
            bank.rename(old)
        tmp.rename(bank)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _speakers(bank, info)


def _speakers(bank: Path, info: dict) -> list[RecordedSpeaker]:
    pools = info.get("pools") or {}
    return [
        RecordedSpeaker(
            spk, pools.get(spk) or pool_of(spk), str(bank / f"{spk}.npy"), tuple(offsets),
            info["sample_rate"],
        )
        for spk, offsets in sorted(info["speakers"].items())
    ]  # fmt: skip


def ensure_bank(
    sr: int,
    recorded_dir: str | os.PathLike[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> list[RecordedSpeaker]:
    """Find (or fetch) the recordings and return the decoded bank's speakers at ``sr``.

    The bank lives in ``<cache>/recorded/bank-<sr>`` (with ``recorded_dir`` given: in
    ``<cache>/recorded/bank-<sr>-<hash of the folder path>``).
    """
    cache_dir = Path(cache).expanduser() if cache is not None else default_cache()
    name = f"bank-{sr}"
    if recorded_dir is not None:
        key = str(Path(recorded_dir).expanduser().absolute())
        if has_split_folders(Path(key)):  # a re-laid-out folder gets a bank of its own
            key += "|splits"
        name += "-" + hashlib.sha1(key.encode()).hexdigest()[:10]
    bank = cache_dir / "recorded" / name
    if (done := _load_bank(bank, sr)) is not None:  # no need to look for the sources again
        return done
    with _cache_lock(cache_dir):  # another process may have built it meanwhile: build_bank checks
        clips, pools = locate(recorded_dir, cache_dir, log)
        return build_bank(clips, bank, sr, log, pools)


@functools.cache  # one entry per speaker of the bank
def _mapped(path: str) -> np.ndarray:
    """The int16 audio of one bank speaker, memory-mapped once per process."""
    return np.load(path, mmap_mode="r")


def render_recorded(
    spk: RecordedSpeaker,
    rng: np.random.Generator,
    sr: int,
    target_s: float,
    speed: float,
    gap_s: tuple[float, float] = SynthOptions.recorded_gap,
) -> np.ndarray:
    """One pseudo-utterance: random clips of ``spk`` joined by short pauses, speed-perturbed.

    The speed factor resamples the joined clips, shifting F0 and formants together (vocal-tract
    length perturbation), so each recorded person gives a range of distinct-sounding voices.

    Args:
        spk: the speaker (bank rate must equal ``sr``).
        rng: the mixture's random generator.
        sr: sample rate, Hz.
        target_s: duration to reach (after the speed change), seconds.
        speed: > 1 faster and higher, < 1 slower and lower.
        gap_s: range of the pause between two clips, seconds (before the speed change).

    Returns:
        (T,) float64, T = ``target_s * sr`` samples.
    """
    from usgm.data.synth import dsp

    if spk.sample_rate != sr:
        raise DataError(f"recorded bank {spk.path} is at {spk.sample_rate} Hz, need {sr}")
    audio = _mapped(spk.path)
    need = int(target_s * sr * speed)
    pieces, total = [], 0
    while total < need:
        k = int(rng.integers(spk.n_clips))
        clip = np.asarray(audio[spk.offsets[k] : spk.offsets[k + 1]], dtype=np.float64) / 32768.0
        gap = np.zeros(int(rng.uniform(*gap_s) * sr)) if pieces else np.zeros(0)
        pieces += [gap, clip * 10 ** (rng.uniform(-3, 3) / 20)]
        total += len(gap) + len(clip)
    x = np.concatenate(pieces)
    # Speed in steps of 1/40 keeps the polyphase filters short (ratio 40/k).
    steps = round(speed * 40)
    if steps != 40:
        x = dsp.resample(x, steps, 40)
    n = int(target_s * sr)
    if len(x) > n:  # cut inside the last clip, with a short fade
        x = x[:n]
        x[-int(0.02 * sr) :] *= np.linspace(1.0, 0.0, int(0.02 * sr))
    return x
