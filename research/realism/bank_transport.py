"""Carry the decoded recorded-speech bank to a machine without apt, bit for bit.

``pack_recorded.py`` re-encodes the bank as low-rate Vorbis so that it fits one device call, but
that copy is not the bank: about 16 dB SNR against it, and lines joined eight to a file with
0.25 s pauses, so a corpus generated from it (``recorded_dir``) is not the default corpus. This
tool moves the bank itself: each speaker's int16 audio as FLAC (lossless), split into parts that
each fit one call's carry limit, rebuilt on the other side into the cache folder where
:func:`usgm.data.synth.recorded.ensure_bank` looks first, and checked against SHA-1 sums of the
original arrays. A corpus generated there without ``recorded_dir`` is then the one generated here.

    python research/realism/bank_transport.py pack --out .bank --part-mb 45     # here: .bank/part00, ...
    python research/realism/bank_transport.py unpack .bank/part00 [.bank/part01 ...]   # there

``unpack`` takes the parts in any order and over several calls (one part per call is fine): it
stages them under ``<cache>/recorded/bank-<sr>.incoming`` and installs the bank once every
speaker has arrived. ``--cache`` defaults to ``$USGM_CACHE`` or ``~/.cache/usgm``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from usgm.data.synth.recorded import catalogue_key, default_cache, ensure_bank

MANIFEST = "manifest.json"


def _sha1(x: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(x, dtype="<i2").tobytes()).hexdigest()


def pack(
    out: Path, part_mb: float, sr: int = 8000, cache: Path | None = None, log=print
) -> list[Path]:
    """Write the local bank (built first if needed) as FLAC parts of about ``part_mb`` MB.

    A part closes before the speaker that would take it past ``part_mb`` (judged from a 0.6
    FLAC ratio), so a part can exceed it only by that estimate's error or by one large speaker.

    Returns:
        The part folders, each with its speakers' ``<id>.flac`` and the full manifest.
    """
    speakers = ensure_bank(sr, cache=cache, log=log)
    if out.exists():
        shutil.rmtree(out)
    manifest = {"catalogue": catalogue_key(), "sample_rate": sr, "speakers": {}, "sha1": {}}
    parts: list[Path] = []
    size = 0.0
    for spk in speakers:
        audio = np.load(spk.path)
        if not parts or (size > 0 and size + audio.nbytes * 0.6 / 1e6 > part_mb):
            parts.append(out / f"part{len(parts):02d}")
            parts[-1].mkdir(parents=True)
            size = 0.0
        path = parts[-1] / f"{spk.spk_id}.flac"
        sf.write(path, audio, sr, format="FLAC", subtype="PCM_16")
        size += path.stat().st_size / 1e6
        manifest["speakers"][spk.spk_id] = list(spk.offsets)
        manifest["sha1"][spk.spk_id] = _sha1(audio)
    for part in parts:
        (part / MANIFEST).write_text(json.dumps(manifest))
    total = sum(p.stat().st_size for part in parts for p in part.iterdir()) / 1e6
    log(f"wrote {len(speakers)} speakers, {total:.1f} MB in {len(parts)} part(s) under {out}")
    return parts


def unpack(parts: list[Path], cache: Path, log=print) -> bool:
    """Stage the speakers of ``parts``; install the bank once all have arrived.

    Returns:
        True once the bank is installed (now or by an earlier call).

    Raises:
        ValueError: a part without a manifest, parts of different banks, a bank of another
            catalogue than this checkout's, or audio that does not match its checksum.
    """
    manifests = []
    for part in parts:
        try:
            manifests.append(json.loads((part / MANIFEST).read_text()))
        except (OSError, ValueError) as err:
            raise ValueError(f"{part}: not a bank part ({MANIFEST}: {err})") from err
    manifest = manifests[0]
    if any(m != manifest for m in manifests[1:]):
        raise ValueError(f"{', '.join(map(str, parts))}: parts of different banks")
    if manifest["catalogue"] != catalogue_key():
        raise ValueError(
            f"{parts[0]}: packed from catalogue {manifest['catalogue']}, this checkout's is "
            f"{catalogue_key()}: pack it again from this commit"
        )
    sr = manifest["sample_rate"]
    bank = cache / "recorded" / f"bank-{sr}"
    try:
        installed = json.loads((bank / "bank.json").read_text())
    except (OSError, ValueError):
        installed = None
    if installed == {k: manifest[k] for k in ("catalogue", "sample_rate", "speakers")}:
        log(f"bank already installed at {bank}")
        return True
    staging = bank.with_name(f"{bank.name}.incoming")
    staging.mkdir(parents=True, exist_ok=True)
    for part in parts:
        for flac in sorted(part.glob("*.flac")):
            spk = flac.stem
            audio, got_sr = sf.read(flac, dtype="int16")
            if spk not in manifest["sha1"] or got_sr != sr or _sha1(audio) != manifest["sha1"][spk]:
                raise ValueError(f"{flac}: audio does not match the manifest's checksum")
            np.save(staging / f"{spk}.npy", audio)
    missing = [s for s in manifest["speakers"] if not (staging / f"{s}.npy").exists()]
    if missing:
        log(f"staged in {staging}; waiting for {len(missing)} speaker(s) of other parts")
        return False
    info = {k: manifest[k] for k in ("catalogue", "sample_rate", "speakers")}
    (staging / "bank.json").write_text(json.dumps(info))
    if bank.exists():
        shutil.rmtree(bank)
    staging.rename(bank)
    log(f"installed the bank ({len(info['speakers'])} speakers) at {bank}")
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="write the local bank as FLAC parts")
    pk.add_argument("--out", type=Path, required=True)
    pk.add_argument("--part-mb", type=float, default=45.0, help="largest part, MB")
    up = sub.add_parser("unpack", help="stage parts; install the bank when complete")
    up.add_argument("parts", type=Path, nargs="+")
    up.add_argument(
        "--cache", type=Path, default=None, help="default: $USGM_CACHE or ~/.cache/usgm"
    )
    args = p.parse_args(argv)
    if args.cmd == "pack":
        pack(args.out, args.part_mb)
        return 0
    try:
        unpack(args.parts, args.cache or default_cache())
    except ValueError as err:
        print(f"bank_transport: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
