"""Catalogue of the recorded human voices in Debian's main archive, and how to read each one.

Each :class:`Source` is one Debian package and the folder inside it that holds voice lines; its
``find`` function maps that unpacked folder to clips per speaker ID. Speaker IDs are lower-case
letters only (they become part of LibriMix-style mixture IDs). What a "speaker" is follows what
the package tells: a character of a dubbed game (one voice actor), or one language of a KDE
learning game (one native speaker who recorded its words). Who is who across packages is not
known; the pools below therefore keep each language of the two KDE games together.

| package | what | speakers |
|---|---|---|
| ``fillets-ng-data-cs`` / ``-nl`` | Fish Fillets NG, Czech / Dutch dub | the two fish of each dub |
| ``hedgewars-data`` | 14 voice packs of short exclamations | one per pack |
| ``drascula`` / ``drascula-spanish`` | Drascula, English / Spanish dub (raw 8-bit, 11.025 kHz) | the ten characters with lines |
| ``flight-of-the-amazon-queen`` | Flight of the Amazon Queen (MP3 lines inside ``queen.1c``) | Joe, and the partner of each dialogue |
| ``ktuberling-data`` | KTuberling: object names read aloud | one per language |
| ``klettres-data`` | KLettres: letters and syllables read aloud | one per language |

None of them is in the real-speech dev set (Asterisk prompts, ``research/realism/real_speech_transfer.py``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from usgm.data.errors import DataError

AUDIO_SUFFIXES = (".ogg", ".wav", ".flac")


@dataclass(frozen=True)
class Clip:
    """One recorded line.

    Attributes:
        path: the file holding it.
        offset: first byte of the line inside ``path`` (archives such as ``queen.1c``).
        size: its length in bytes, -1 for the whole file.
        raw_rate: > 0 for headerless unsigned 8-bit mono PCM at this rate (Drascula's ``.ALS``);
            0 for a file soundfile reads (Ogg, WAV, FLAC, MP3).
    """

    path: Path
    offset: int = 0
    size: int = -1
    raw_rate: int = 0


@dataclass(frozen=True)
class Source:
    """One Debian package of voice lines.

    Attributes:
        package: the Debian package name.
        folder: the folder inside the package that holds the lines (only it is unpacked).
        find: unpacked ``folder`` → clips per speaker ID.
    """

    package: str
    folder: str
    find: Callable[[Path], dict[str, list[Clip]]]


def is_speaker_id(name: str) -> bool:
    """Speaker IDs are lower-case ASCII letters only (``_`` and ``-`` separate mixture IDs)."""
    return re.fullmatch(r"[a-z]+", name) is not None


def audio_files(folder: Path, pattern: str = "*") -> list[Path]:
    """Audio files matching ``pattern`` under ``folder``, sorted (broken links left out).

    A link to a recording another folder also holds is dropped later, by content.
    """
    return sorted(
        p for p in folder.glob(pattern) if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
    )


# Fish Fillets NG: clips ``<level>/<lang>/<level>-<character>-<line>.ogg``; "m" / "v" are the
# small / big fish of each dub, the only characters with enough lines (26–34 min each).
FILLETS_CHARACTERS = ("m", "v")


def fillets_speaker(path: Path) -> str | None:
    """Speaker ID of a Fish Fillets clip ``…/<lang>/<level>-<character>-<line>.ogg``, or None."""
    parts = path.stem.split("-")
    lang = path.parent.name
    if len(parts) < 3 or lang not in ("cs", "nl") or parts[1] not in FILLETS_CHARACTERS:
        return None
    return f"f{lang}{parts[1]}"


def _fillets(lang: str) -> Callable[[Path], dict[str, list[Clip]]]:
    def find(folder: Path) -> dict[str, list[Clip]]:
        clips: dict[str, list[Clip]] = {}
        for path in audio_files(folder, f"*/{lang}/*"):
            if (spk := fillets_speaker(path)) is not None:
                clips.setdefault(spk, []).append(Clip(path))
        return clips

    return find


# Hedgewars voice packs, one voice actor each as far as the package tells; "Robot" is left out
# (a vocoder effect, not a voice).
HEDGEWARS = {
    name: "hw" + name.lower().replace("_", "")
    for name in (
        "British", "Classic", "Default", "Default_es", "Default_pl", "Default_ru", "Default_uk",
        "HillBilly", "Mobster", "Pirate", "Russian", "Russian_pl", "Singer", "Surfer",
    )
}  # fmt: skip


def _hedgewars(folder: Path) -> dict[str, list[Clip]]:
    return {
        spk: [Clip(p) for p in files]
        for pack, spk in HEDGEWARS.items()
        if (files := audio_files(folder / pack, "*"))
    }


# Drascula: ``<character prefix><number>.ALS`` lines, unsigned 8-bit PCM at 11.025 kHz (the
# rate ScummVM plays them at). No prefix is the hero, John Hacker; "S" (sound effects) and "F"
# (three lines) are left out. The Italian package reuses the English recordings, and the Spanish
# one links to them where the Spanish dub has no line of its own.
DRASCULA_RATE = 11025
DRASCULA_CHARACTERS = {"": "jh", "D": "d", "VB": "vb", "BJ": "bj", "L": "l", "I": "i", "T": "t",
                       "E": "e", "B": "b", "P": "p"}  # fmt: skip


def _drascula(lang: str) -> Callable[[Path], dict[str, list[Clip]]]:
    def find(folder: Path) -> dict[str, list[Clip]]:
        clips: dict[str, list[Clip]] = {}
        for path in sorted(folder.glob("*")):
            m = re.fullmatch(r"([A-Z]*)\d+\.ALS", path.name.upper())
            if m and m.group(1) in DRASCULA_CHARACTERS and not path.is_symlink():
                spk = f"dr{lang}{DRASCULA_CHARACTERS[m.group(1)]}"
                clips.setdefault(spk, []).append(Clip(path, raw_rate=DRASCULA_RATE))
        return clips

    return find


# Flight of the Amazon Queen: ``queen.1c`` is a resource bundle whose table lists MP3 voice
# lines ``<talk:2><node:4><J|P><part>.SB`` (J: Joe, P: the other person of dialogue ``talk``) and
# ``JOE<n>.SB`` (Joe's remarks). Cut-scene lines (``C…``) do not say who speaks: left out.
_FOTAQ_LINE = re.compile(r"(\d\d)[0-9A-Z]{4}([JP])\d\.SB")


def read_queen_table(path: Path) -> list[tuple[str, int, int]]:
    """Entries ``(name, offset, size)`` of a compressed FOTAQ bundle (``queen.1c``).

    Layout: ``QTBL``, a 6-byte version, 2 obsolete bytes, the compression of the voice lines
    (1: MP3, 2: Ogg Vorbis, 3: FLAC), a big-endian uint16 entry count, then per entry a 12-byte
    NUL-padded name, a bundle number (1 byte) and big-endian uint32 offset and size.

    Raises:
        DataError: not such a bundle, uncompressed voice lines (Sound Blaster data, not read
            here), or a table that points outside the file.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(15)
        if len(head) < 15 or head[:4] != b"QTBL":
            raise DataError(f"{path}: not a Flight of the Amazon Queen bundle (no QTBL table)")
        if head[12] not in (1, 2, 3):
            raise DataError(
                f"{path}: voice lines stored with compression type {head[12]}; only the MP3, "
                "Vorbis or FLAC bundles (queen.1c, as Debian ships) are read"
            )
        (count,) = struct.unpack(">H", head[13:15])
        table = fh.read(21 * count)
    if len(table) != 21 * count:
        raise DataError(f"{path}: truncated resource table ({count} entries announced)")
    entries = []
    for k in range(count):
        row = table[21 * k : 21 * (k + 1)]
        name = row[:12].split(b"\0")[0].decode("ascii", errors="replace")
        offset, length = struct.unpack(">II", row[13:21])
        if offset + length > size:
            raise DataError(f"{path}: entry {name} lies outside the file")
        entries.append((name, offset, length))
    return entries


def fotaq_speaker(name: str) -> str | None:
    """Speaker ID of a FOTAQ voice line's name, or None (cut scenes, other resources)."""
    if re.fullmatch(r"JOE\d+\.SB", name):
        return "fqjoe"
    m = _FOTAQ_LINE.fullmatch(name)
    if m is None:
        return None
    if m.group(2) == "J":
        return "fqjoe"
    # Talk numbers as letters (0 → a … 9 → j): IDs stay letters-only.
    return "fq" + "".join(chr(ord("a") + int(d)) for d in m.group(1))


def _fotaq(folder: Path) -> dict[str, list[Clip]]:
    bundle = folder / "queen.1c"
    clips: dict[str, list[Clip]] = {}
    if bundle.is_file():
        for name, offset, length in read_queen_table(bundle):
            if (spk := fotaq_speaker(name)) is not None:
                clips.setdefault(spk, []).append(Clip(bundle, offset, length))
    return clips


def _per_language(prefix: str, pattern: str) -> Callable[[Path], dict[str, list[Clip]]]:
    """KDE games: one native speaker per language folder (``prefix`` + language letters)."""

    def find(folder: Path) -> dict[str, list[Clip]]:
        clips = {}
        for lang in sorted(d for d in folder.iterdir() if d.is_dir()):
            spk = prefix + re.sub(r"[^a-z]", "", lang.name.lower())
            if files := audio_files(lang, pattern):
                clips.setdefault(spk, []).extend(Clip(p) for p in files)
        return clips

    return find


SOURCES = (
    Source("fillets-ng-data-cs", "usr/share/games/fillets-ng/sound", _fillets("cs")),
    Source("fillets-ng-data-nl", "usr/share/games/fillets-ng/sound", _fillets("nl")),
    Source("hedgewars-data", "usr/share/games/hedgewars/Data/Sounds/voices", _hedgewars),
    Source("drascula", "usr/share/scummvm/drascula/en", _drascula("en")),
    Source("drascula-spanish", "usr/share/scummvm/drascula/es", _drascula("es")),
    Source("flight-of-the-amazon-queen", "usr/share/scummvm/flight-of-the-amazon-queen", _fotaq),
    Source("ktuberling-data", "usr/share/ktuberling/sounds", _per_language("kt", "*")),
    Source("klettres-data", "usr/share/klettres", _per_language("kl", "*/*")),
)
PACKAGES = tuple(s.package for s in SOURCES)

#: Download size in bytes of each package's ``.deb`` (``Size:`` of ``apt-cache show`` on Debian 12
#: "bookworm"; other releases differ a little). Only used to tell the user what a first run
#: fetches before it starts: 377,605,100 bytes in all (378 MB, 360 MiB).
DOWNLOAD_BYTES = {
    "fillets-ng-data-cs": 39_042_172,
    "fillets-ng-data-nl": 32_593_580,
    "hedgewars-data": 145_330_284,
    "drascula": 26_302_044,
    "drascula-spanish": 13_286_564,
    "flight-of-the-amazon-queen": 34_859_620,
    "ktuberling-data": 46_661_752,
    "klettres-data": 39_529_084,
}

# Speaker-disjoint pools (everyone else trains): dev and test get held-out people, so that
# validation (and thus checkpoint selection) sees real voices the model never trained on. The
# same language of both KDE games goes to one pool, in case one person recorded both.
POOLS = {
    "hwbritish": "dev", "hwrussian": "dev", "ktde": "dev", "klde": "dev",
    "hwdefaultes": "test", "hwmobster": "test", "ktlt": "test", "kllt": "test",
}  # fmt: skip


# Recording sources whose people share one recording chain (studio, microphone, processing):
# speaker-ID prefix → source. Each KDE language was recorded by another volunteer at home, so
# those speakers share no chain and have no group.
RECORDING_GROUPS = {
    "dren": "drascula-en", "dres": "drascula-es", "fcs": "fillets-cs", "fnl": "fillets-nl",
    "fq": "fotaq", "hw": "hedgewars",
}  # fmt: skip


def recording_group(spk_id: str) -> str | None:
    """The recording source ``spk_id`` shares with other speakers, or None (see RECORDING_GROUPS)."""
    return next((g for k, g in RECORDING_GROUPS.items() if spk_id.startswith(k)), None)


def pool_of(spk_id: str) -> str:
    """``train``, ``dev`` or ``test``."""
    return POOLS.get(spk_id, "train")


def find_clips(roots: dict[str, Path]) -> dict[str, list[Clip]]:
    """Clips per speaker ID of every source whose package is unpacked under ``roots[package]``."""
    clips: dict[str, list[Clip]] = {}
    for source in SOURCES:
        folder = roots[source.package] / source.folder if source.package in roots else None
        if folder is not None and folder.is_dir():
            for spk, found in source.find(folder).items():
                clips.setdefault(spk, []).extend(found)
    return {k: v for k, v in sorted(clips.items()) if v}


def speaker_rules() -> dict[str, object]:
    """The tables that decide who speaks each line (plain data; part of a bank's identity)."""
    return {
        "fillets": list(FILLETS_CHARACTERS),
        "hedgewars": sorted(HEDGEWARS.items()),
        "drascula": [DRASCULA_RATE, sorted(DRASCULA_CHARACTERS.items())],
        "fotaq": _FOTAQ_LINE.pattern,
    }
