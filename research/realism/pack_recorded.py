"""Pack the recorded-speech bank as small Ogg Vorbis files for a machine without apt.

The generator's recorded speech (:mod:`usgm.data.synth.recorded`) comes from eight Debian packages
(~360 MB). A machine that cannot reach the Debian archive (e.g. the lent GPU machine) gets a
re-encoded copy of the decoded 8 kHz bank instead: about 52 MB of Vorbis in the same folder layout
(one sub-folder of clips per speaker ID), which ``recorded_dir`` /
``usgm-make-data --recorded-dir`` accept. Every file joins ``--join`` lines with 0.25 s pauses
(one Vorbis header per file is ~4 kB). `--quality` is libsndfile's compression level: 1.0 gives
the smallest files and the lowest quality.

Not the default data: the copy is about 16 dB SNR against the bank (at 1.0) and its utterances
hold the 0.25 s joins, and the CPU model trained on a corpus from it scored about 0.25 dB lower
on real speech (docs/default-data.md). To reproduce the default corpus on
another machine, move the bank itself with ``research/realism/bank_transport.py`` (lossless, in parts).

    python research/realism/pack_recorded.py --out .rec     # then carry .rec, use recorded_dir=.rec
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from usgm.data.synth.recorded import ensure_bank


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder to write (the sound/ root)")
    p.add_argument(
        "--quality",
        type=float,
        default=0.9,
        help="libsndfile compression level 0..1 (1: smallest, lowest quality)",
    )
    p.add_argument("--join", type=int, default=8, help="recorded lines per file")
    args = p.parse_args(argv)
    total = 0
    for spk in ensure_bank(8000, log=lambda m: print(m, file=sys.stderr)):
        folder = args.out / spk.spk_id
        folder.mkdir(parents=True, exist_ok=True)
        audio = np.load(spk.path, mmap_mode="r")
        pause = np.zeros(2000)
        for k in range(0, spk.n_clips, args.join):
            lines = [
                np.asarray(audio[spk.offsets[i] : spk.offsets[i + 1]], dtype=np.float64)
                for i in range(k, min(k + args.join, spk.n_clips))
            ]
            clip = np.concatenate([x for line in lines for x in (line, pause)][:-1])
            path = folder / f"{k:04d}.ogg"
            sf.write(
                path, clip / 32768, 8000, format="OGG", subtype="VORBIS",
                compression_level=args.quality,
            )  # fmt: skip
            total += path.stat().st_size
    print(f"wrote {total / 1e6:.1f} MB to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
