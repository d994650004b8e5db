"""Locating, reading and validating a LibriMix root (real Libri2Mix/Libri3Mix or the generated set).

Layout (Cosentino et al., "LibriMix", 2020)::

    ROOT/wav{8k,16k}/{min,max}/{train-360,train-100,dev,test}/{mix_both,mix_clean,s1,s2[,s3],noise}/ID.wav
    ROOT/wav{8k,16k}/{min,max}/metadata/mixture_<split>_{mix_both,mix_clean}.csv

The CSVs hold the paths as they were at generation time (usually absolute, from another machine),
so every path is rebuilt relative to the given root: the part after ``wav8k/min/`` (or whichever
rate/mode folder it names) is joined to ``ROOT/wav8k/min``. A moved or copied dataset thus works.

Validation happens up front, before training (:func:`load_split`): the root, the metadata CSV, its
columns and rows, that every listed wav exists and, depending on ``validate``, the headers (rate,
channels, length) of a sample of files or of all of them. :func:`read_wav` checks each file's
header again when it is read, so a file that the sample missed still fails with a clear message.
Every problem raises :class:`~usgm.data.errors.DataError` naming the file, column or key.

Sample values: every read (training, dev and test items, dynamic mixing's pool files) checks that
the samples are finite and at most :data:`MAX_ABS_SAMPLE` in magnitude; a NaN/Inf sample or an
absurd level (a float file written on the wrong scale) is a DataError naming the file and the
first bad sample. There is no skip policy: one bad file is a damaged corpus, and a silently smaller
training set (or one whose skipped count stays inside worker processes) is worse than a clear stop.
Only float WAV/AIFF (subtype FLOAT or DOUBLE) can hold such values, so the up-front checks read the
samples of those files only: ``validate=all`` finds every bad file before training starts.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from usgm.data.errors import DataError, SourceCountError

SPLITS = ("train-360", "train-100", "dev", "test")
MODES = ("min", "max")
TASKS = ("sep_noisy", "sep_clean")
Validate = Literal["sample", "all", "none"]
VALIDATE_CHOICES = ("sample", "all", "none")
# Which metadata CSV each task reads: its `mixture_path` is the model input.
TASK_MIXTURE = {"sep_noisy": "mix_both", "sep_clean": "mix_clean"}

GENERATE_HINT = (
    "generate the default dataset with `usgm-make-data --out {root}` (or `make data`), "
    "or point `data.root=` at a LibriMix folder (the one that contains wav8k/)"
)
# Float files store any value; 16 × int16 full scale still admits int-scaled float files, while
# sums and squares of such samples stay far from float32 overflow (training computes both).
MAX_ABS_SAMPLE = 2.0**16
# Subtypes whose samples can be NaN/Inf or out of range (integer PCM and codecs cannot).
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
_SCAN_BLOCK = 1 << 20  # samples per block when scanning a float file
_RATE_MODE_RE = re.compile(r"^wav\d+k$")
_SOURCE_COL_RE = re.compile(r"^source_(\d+)_path$")
_MAX_LISTED = 5


@dataclass(frozen=True)
class Utterance:
    """One mixture of a split, with every path resolved against the given root.

    Attributes:
        id: the ``mixture_ID`` column.
        mixture: the model input file (``mix_both`` for sep_noisy, ``mix_clean`` for sep_clean).
        sources: one file per speaker, ``s1 … sC``.
        noise: the noise file (None when the CSV has no ``noise_path``, i.e. mix_clean metadata).
        length: samples per file (the CSV's ``length`` column).
    """

    id: str
    mixture: Path
    sources: tuple[Path, ...]
    noise: Path | None
    length: int

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file of this mixture: mixture, sources, then noise if any."""
        extra = (self.noise,) if self.noise is not None else ()
        return (self.mixture, *self.sources, *extra)


def rate_folder(sample_rate: int) -> str:
    """``8000 → "wav8k"``; the rate must be a whole number of kHz (LibriMix has 8k and 16k)."""
    if not isinstance(sample_rate, int) or sample_rate <= 0 or sample_rate % 1000:
        raise DataError(
            f"data.sample_rate={sample_rate!r} is not a whole number of kHz "
            "(LibriMix has wav8k = 8000 and wav16k = 16000)"
        )
    return f"wav{sample_rate // 1000}k"


def dataset_dir(root: str | os.PathLike, sample_rate: int = 8000, mode: str = "min") -> Path:
    """Check the root and return ``ROOT/wav{sr}k/{mode}``.

    Args:
        root: the LibriMix root (``Libri2Mix/``), or directly its ``wav8k/min`` folder.
        sample_rate: 8000 or 16000 (anything in whole kHz is accepted if the folder exists).
        mode: ``min`` or ``max``.

    Raises:
        DataError: the root or the rate/mode folder is missing; the message says what to do.
    """
    if mode not in MODES:
        raise DataError(f"data.mode={mode!r} is not one of {', '.join(MODES)}")
    folder = rate_folder(sample_rate)
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        # usgm-make-data --out <that file> would fail too: point at a folder instead.
        raise DataError(
            f"LibriMix root {root} is a file, not a folder: point data.root= at the folder that "
            f"contains wav8k/ (e.g. {root.parent}), or generate the default dataset into a new "
            "folder with `usgm-make-data --out <folder>` and set data.root=<folder>"
        )
    if not root.is_dir():
        raise DataError(f"LibriMix root {root} does not exist: " + GENERATE_HINT.format(root=root))
    base = root / folder / mode
    if base.is_dir():
        return base
    # Also accept a root that already is the rate/mode folder (ROOT/wav8k/min).
    if root.name == mode and root.parent.name == folder and (root / "metadata").is_dir():
        return root
    found = sorted(
        f"{r.name}/{m.name}"
        for r in root.iterdir()
        if r.is_dir() and _RATE_MODE_RE.match(r.name)
        for m in r.iterdir()
        if m.is_dir()
    )
    nested = sorted(p.name for p in root.iterdir() if (p / folder).is_dir())
    hint = f"found {', '.join(found)}; set data.sample_rate / data.mode to match" if found else ""
    if nested:
        hint = f"it contains {', '.join(nested)}: point data.root= at one of those"
    if not hint:
        hint = GENERATE_HINT.format(root=root)
    raise DataError(f"LibriMix root {root} has no {folder}/{mode}/ folder: {hint}")


def metadata_path(base: Path, split: str, kind: str) -> Path:
    """``base/metadata/mixture_<split>_<kind>.csv`` (kind: mix_both or mix_clean)."""
    return base / "metadata" / f"mixture_{split}_{kind}.csv"


def resolve_path(recorded: str, base: Path) -> Path:
    """Rebuild a path recorded in a LibriMix CSV relative to ``base`` (= ``ROOT/wav8k/min``).

    The recorded path (absolute or relative, POSIX or Windows) is cut after its last
    ``wav<N>k/<min|max>/`` pair and the rest joined to ``base``; a path without such a pair keeps
    its last three components (``<split>/<kind>/<ID>.wav``), which is the fixed LibriMix layout.

    Example:
        ``/old/host/Libri2Mix/wav8k/min/dev/s1/a_b.wav`` → ``base/dev/s1/a_b.wav``.
    """
    parts = [p for p in recorded.replace("\\", "/").split("/") if p and p != "."]
    for i in range(len(parts) - 3, -1, -1):
        if parts[i + 1] in MODES and _RATE_MODE_RE.match(parts[i]):
            return base / "/".join(parts[i + 2 :])
    return base / "/".join(parts[-3:])


def read_metadata(csv_path: Path, base: Path, n_src: int, *, need_noise: bool) -> list[Utterance]:
    """Parse one ``mixture_<split>_<kind>.csv`` and resolve its paths against ``base``.

    Args:
        csv_path: the metadata file.
        base: ``ROOT/wav{sr}k/{mode}``, where the paths are resolved.
        n_src: expected number of ``source_<k>_path`` columns.
        need_noise: require a ``noise_path`` column (the mix_both metadata).

    Returns:
        The utterances in file order.

    Raises:
        DataError: missing/unreadable/empty file, missing column, wrong source-column count,
            a row with the wrong number of fields, an empty field, a bad ``length``, a
            duplicate ``mixture_ID``; the message names the file, line and column.
    """
    if not csv_path.is_file():
        listing = sorted(p.name for p in csv_path.parent.glob("mixture_*.csv"))
        have = f"; {csv_path.parent} has {', '.join(listing)}" if listing else ""
        raise DataError(f"metadata file {csv_path} is missing{have}")
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"metadata file {csv_path} cannot be read as CSV: {err}") from err
    if not rows or not any(c.strip() for c in rows[0]):
        raise DataError(f"metadata file {csv_path} is empty (no header row)")
    header = [c.strip() for c in rows[0]]
    col = {name: i for i, name in enumerate(header)}

    source_ids = sorted(int(m.group(1)) for c in header if (m := _SOURCE_COL_RE.match(c)))
    if source_ids != list(range(1, len(source_ids) + 1)) or len(source_ids) != n_src:
        cols = ", ".join(f"source_{k}_path" for k in source_ids) or "none"
        expected = ", ".join(f"source_{k}_path" for k in range(1, n_src + 1))
        raise SourceCountError(
            f"metadata file {csv_path}: source columns are [{cols}] ({len(source_ids)} sources) "
            f"but n_src={n_src} expects [{expected}]; set data.n_src={len(source_ids) or '?'} or "
            f"point data.root= at a Libri{n_src}Mix root",
            csv_path=str(csv_path),
            found=len(source_ids),
            expected=n_src,
        )
    required = ["mixture_ID", "mixture_path", *(f"source_{k}_path" for k in source_ids)]
    required += ["noise_path"] if need_noise else []
    required += ["length"]
    missing = [c for c in required if c not in col]
    if missing:
        raise DataError(
            f"metadata file {csv_path} lacks column {', '.join(repr(c) for c in missing)} "
            f"(header: {', '.join(header)})"
        )

    out: list[Utterance] = []
    seen: set[str] = set()
    for line, row in enumerate(rows[1:], start=2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            raise DataError(
                f"metadata file {csv_path}, line {line}: {len(row)} fields, header has "
                f"{len(header)}"
            )
        fields = {c: row[col[c]].strip() for c in required}
        for c, v in fields.items():
            if not v:
                raise DataError(f"metadata file {csv_path}, line {line}: column {c!r} is empty")
        try:
            length = int(float(fields["length"]))
        except ValueError:
            length = -1
        if length <= 0:
            raise DataError(
                f"metadata file {csv_path}, line {line}: column 'length' = "
                f"{fields['length']!r} is not a positive number of samples"
            )
        uid = fields["mixture_ID"]
        if uid in seen:
            raise DataError(f"metadata file {csv_path}, line {line}: duplicate mixture_ID {uid!r}")
        seen.add(uid)
        out.append(
            Utterance(
                id=uid,
                mixture=resolve_path(fields["mixture_path"], base),
                sources=tuple(resolve_path(fields[f"source_{k}_path"], base) for k in source_ids),
                noise=resolve_path(fields["noise_path"], base) if need_noise else None,
                length=length,
            )
        )
    if not out:
        raise DataError(f"metadata file {csv_path} has a header but no rows")
    return out


def check_exists(utterances: Sequence[Utterance], csv_path: Path, base: Path) -> None:
    """Check that every file listed exists (one directory listing per folder, not one stat each).

    Raises:
        DataError: naming the first missing files and how many there are.
    """
    listings: dict[Path, set[str]] = {}
    missing: list[Path] = []
    total = 0
    for utt in utterances:
        for path in utt.files:
            total += 1
            names = listings.get(path.parent)
            if names is None:
                try:
                    names = set(os.listdir(path.parent))
                except OSError:
                    names = set()
                listings[path.parent] = names
            if path.name not in names:
                missing.append(path)
    if missing:
        shown = "\n  ".join(str(p) for p in missing[:_MAX_LISTED])
        more = f"\n  … and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise DataError(
            f"{len(missing)} of {total} wav files listed in {csv_path} are missing "
            f"(paths resolved relative to {base}):\n  {shown}{more}"
        )


def sample_problem(x: np.ndarray, offset: int = 0) -> str | None:
    """Describe the first non-finite or out-of-range sample of ``x``, or None when all are usable.

    Args:
        x: samples, (frames,) or (frames, channels).
        offset: index of ``x``'s first frame in its file, so the message points into the file.

    Returns:
        e.g. ``"sample 1234 is nan (float audio with NaN/Inf samples)"``.
    """
    if x.size == 0:
        return None
    frames = x.reshape(len(x), -1)
    finite = np.isfinite(frames).all(axis=1)
    if not finite.all():
        first = int(np.argmin(finite))
        value = float(frames[first][~np.isfinite(frames[first])][0])
        return f"sample {offset + first} is {value} (float audio with NaN/Inf samples)"
    peaks = np.abs(frames).max(axis=1)
    if float(peaks.max()) > MAX_ABS_SAMPLE:
        first = int(np.argmax(peaks > MAX_ABS_SAMPLE))
        return (
            f"sample {offset + first} has magnitude {float(peaks[first]):.3g} > "
            f"{MAX_ABS_SAMPLE:.0f}: not audio on the [-1, 1] scale (a float file written "
            "with the wrong scale?)"
        )
    return None


def scan_samples(path: Path, channels: int) -> str | None:
    """Read a whole file block by block and describe its first bad sample (None: all usable).

    Args:
        path: an audio file soundfile opens.
        channels: its channel count (sets the block size, so memory stays bounded).
    """
    block = max(1, _SCAN_BLOCK // max(channels, 1))
    offset = 0
    for data in sf.blocks(str(path), blocksize=block, dtype="float32", always_2d=True):
        problem = sample_problem(data, offset)
        if problem:
            return problem
        offset += len(data)
    return None


def header_problem(path: Path, sample_rate: int, length: int | None = None) -> str | None:
    """Describe what is wrong with a wav header, or None when it is fine.

    A float file (subtype FLOAT/DOUBLE) is also read in full to check that its samples are
    finite and in range (:func:`sample_problem`); integer PCM cannot hold such values.

    Args:
        path: the wav file.
        sample_rate: expected rate (``data.sample_rate``).
        length: expected number of frames (the CSV's ``length``), None to skip that check.
    """
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        return f"{path}: unreadable or corrupt audio file ({err})"
    if info.samplerate != sample_rate:
        return (
            f"{path}: sample rate {info.samplerate} Hz, expected {sample_rate} (data.sample_rate)"
        )
    if info.channels != 1:
        return f"{path}: {info.channels} channels, expected mono"
    if length is not None and info.frames != length:
        return f"{path}: {info.frames} samples, but its metadata 'length' is {length}"
    if info.subtype in FLOAT_SUBTYPES:
        try:
            problem = scan_samples(path, info.channels)
        except Exception as err:  # a header that lies about the data (truncated chunk, …)
            return f"{path}: unreadable or corrupt audio file ({err})"
        if problem:
            return f"{path}: {problem}"
    return None


def check_headers(
    utterances: Sequence[Utterance],
    csv_path: Path,
    sample_rate: int,
    n_check: int | None,
    seed: int = 0,
) -> None:
    """Check the headers of every file of ``n_check`` utterances (None: all of them).

    The first and last utterances are always in the sample, the rest are drawn with ``seed``.

    Raises:
        DataError: naming the first bad files (rate, channels, length, unreadable).
    """
    n = len(utterances)
    if n_check is None or n_check >= n:
        idx: Sequence[int] = range(n)
    elif n_check <= 0:
        return
    else:
        rng = np.random.default_rng(seed)
        drawn = rng.choice(np.arange(1, n - 1), size=max(n_check - 2, 0), replace=False)
        idx = sorted({0, n - 1, *drawn.tolist()})
    problems: list[str] = []
    for i in idx:
        utt = utterances[i]
        for path in utt.files:
            problem = header_problem(path, sample_rate, utt.length)
            if problem:
                problems.append(problem)
        if len(problems) >= _MAX_LISTED:
            break
    if problems:
        raise DataError(f"bad wav files listed in {csv_path}:\n  " + "\n  ".join(problems))


def load_split(
    root: str | os.PathLike,
    split: str,
    *,
    n_src: int = 2,
    sample_rate: int = 8000,
    mode: str = "min",
    task: str = "sep_noisy",
    validate: Validate = "sample",
    validate_samples: int = 16,
    limit: int | None = None,
    seed: int = 0,
) -> list[Utterance]:
    """Read and validate one split of a LibriMix root.

    Args:
        root: the LibriMix root (``…/Libri2Mix``).
        split: ``train-360``, ``train-100``, ``dev`` or ``test`` (any name with a metadata CSV).
        n_src: number of speakers (2 for Libri2Mix, 3 for Libri3Mix).
        sample_rate: 8000 or 16000, selects ``wav8k``/``wav16k``.
        mode: ``min`` or ``max``.
        task: ``sep_noisy`` reads ``mix_both`` metadata (mixture, sources, noise), ``sep_clean``
            the ``mix_clean`` metadata (no noise).
        validate: ``none`` (CSV only), ``sample`` (every file exists + headers of
            ``validate_samples`` mixtures), ``all`` (every header; slow on 50 k mixtures).
        validate_samples: mixtures whose headers ``sample`` checks.
        limit: keep the first ``limit`` mixtures (debug runs); only those are validated.
        seed: seed of the header sample.

    Returns:
        The split's utterances with resolved paths.

    Raises:
        DataError: on any problem, naming the file/column/key.
    """
    if task not in TASKS:
        raise DataError(f"data.task={task!r} is not one of {', '.join(TASKS)}")
    if validate not in VALIDATE_CHOICES:
        raise DataError(f"data.validate={validate!r} is not one of {', '.join(VALIDATE_CHOICES)}")
    if not isinstance(n_src, int) or n_src < 1:
        raise DataError(f"data.n_src={n_src!r} must be a positive integer")
    base = dataset_dir(root, sample_rate, mode)
    kind = TASK_MIXTURE[task]
    csv_path = metadata_path(base, split, kind)
    utts = read_metadata(csv_path, base, n_src, need_noise=(task == "sep_noisy"))
    if limit is not None:
        utts = utts[: max(int(limit), 0)]
        if not utts:
            raise DataError(f"limit {limit} leaves no mixtures of split {split!r}")
    if validate != "none":
        check_exists(utts, csv_path, base)
        n_check = None if validate == "all" else validate_samples
        check_headers(utts, csv_path, sample_rate, n_check, seed)
    return utts


def read_wav(
    path: Path,
    sample_rate: int,
    start: int = 0,
    frames: int = -1,
    expected_length: int | None = None,
) -> np.ndarray:
    """Read part of a mono wav as float32, checking its header on the way.

    Args:
        path: the wav file.
        sample_rate: required rate.
        start: first sample.
        frames: number of samples (-1: to the end).
        expected_length: when given, the file must hold at least ``start + frames`` samples
            (metadata says so); a shorter file is an error rather than silently short.

    Returns:
        (T,) float32, finite, at most :data:`MAX_ABS_SAMPLE` in magnitude (nominally in [-1, 1]).

    Raises:
        DataError: unreadable/corrupt file, wrong rate, not mono, shorter than expected, or a
            NaN/Inf/out-of-range sample (:func:`sample_problem`).
    """
    try:
        with sf.SoundFile(str(path)) as f:
            if f.samplerate != sample_rate:
                raise DataError(
                    f"{path}: sample rate {f.samplerate} Hz, expected {sample_rate} "
                    "(data.sample_rate)"
                )
            if f.channels != 1:
                raise DataError(f"{path}: {f.channels} channels, expected mono")
            if start:
                f.seek(start)
            data = f.read(frames, dtype="float32", always_2d=False)
            is_float = f.subtype in FLOAT_SUBTYPES
    except DataError:
        raise
    except Exception as err:  # LibsndfileError (RuntimeError), OSError, TypeError
        raise DataError(f"{path}: unreadable or corrupt audio file ({err})") from err
    if expected_length is not None and frames >= 0 and len(data) < frames:
        raise DataError(
            f"{path}: holds {start + len(data)} samples, metadata 'length' says "
            f"{expected_length} (needed samples {start}…{start + frames})"
        )
    # Checked on every read of a float file, not only up front: one NaN sample turns every weight
    # into NaN within a couple of steps, and the up-front checks may sample other files. Integer
    # PCM (LibriMix, the generated corpus) cannot hold such values: no scan on the hot path.
    problem = sample_problem(data, start) if is_float else None
    if problem:
        raise DataError(f"{path}: {problem}")
    return np.ascontiguousarray(data, dtype=np.float32)
