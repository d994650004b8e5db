"""Synthetic-to-real transfer: SI-SNRi on mixtures of real recorded speech vs the synthetic test.

Builds LibriMix-style noisy 2- and 3-speaker mixtures from the real studio speech in Debian's
Asterisk voice-prompt packages, runs a usgm model (Lightning checkpoint or ``usgm-export`` file)
over them, and reports its SI-SNRi beside the same model's SI-SNRi on the generated default
corpus's test split. Measurement only: never train on these mixtures.

Speakers (one person per entry; the en and es core sounds are the same woman, Allison):

============  =====================================================  ======  ===========
speaker       Debian package(s)                                      sex     licence
============  =====================================================  ======  ===========
allison       asterisk-core-sounds-en-wav, asterisk-core-sounds-es-wav  female  CC-BY-SA-3.0
june          asterisk-core-sounds-fr-wav                            female  CC-BY-SA-3.0
carlo         asterisk-core-sounds-it-wav                            male    CC-BY-SA-3.0
ru            asterisk-core-sounds-ru-wav                            female  CC-BY-SA-3.0
menardi       asterisk-prompt-it-menardi-wav                         female  CC-BY-SA-3.0
es-co         asterisk-prompt-es-co (GSM 6.10)                       female  CC-BY-3.0
armelle       asterisk-prompt-fr-armelle (GSM 6.10)                  female  CC-BY-3.0
============  =====================================================  ======  ===========

Attribution: Asterisk core sound prompts © Digium, Inc. / Sangoma (voices Allison Smith, June
Wallack, Carlo Frasca, Ivrvoice) under CC-BY-SA-3.0; Italian prompts by Marco Menardi under
CC-BY-SA-3.0 (see the package copyright file); Colombian Spanish prompts (asterisk-prompt-es-co)
and French prompts by Armelle Desjardins (asterisk-prompt-fr-armelle) under CC-BY-3.0. The exact
notices are in each package's ``usr/share/doc/<package>/copyright``. usgm ships none of this audio
and no derived audio: the mixtures are generated on demand into a local cache.

How a mixture is made (``min`` mode, LibriMix rules, fixed seed → identical set):

- The prompt files of each speaker are split by a stable hash of their file name into ``dev`` and
  ``test`` halves. One "utterance" is a run of prompts of one speaker concatenated (each prompt
  keeps its own recorded lead-in/out, so there is no digital silence) until it reaches a drawn
  duration of 3–6 s (the generator's utterance range).
- Every mixture has different people (different speaker keys; en+es Allison is one key).
- Noise: the generator's café noise model (:func:`usgm.data.synth.noise.cafe_noise`: distant
  eSpeak babble from the generator's held-out *test* babble talkers, coloured background, level
  changes, transients), since no package holds real babble.
- :func:`usgm.data.mixing.mix_librimix` (speakers U(−33, −25) LUFS, noise U(−38, −30) LUFS,
  0.9 peak rule) then :func:`usgm.data.mixing.quantize_mixture` (exact int16 sums).

The built set is cached as ``<mix-dir>/real{2,3}mix_<split>/`` (``s1..sN`` and ``noise`` per
mixture as 16-bit FLAC, plus ``manifest.json``); ``mix_clean`` and ``mix_both`` are their exact
sums. A cache folder can be copied to a machine without apt (pass ``--mix-dir``).

Getting the speech (Debian/Ubuntu with the Debian archive; no root needed for download/unpack)::

    mkdir -p data/real_speech/debs && cd data/real_speech/debs && apt-get update && \\
      apt-get download asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav \\
        asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav \\
        asterisk-prompt-it-menardi-wav asterisk-prompt-es-co asterisk-prompt-fr-armelle

The script unpacks them (``dpkg -x``) into ``data/real_speech/pkgs/`` itself (``--fetch`` runs the
download too).

Examples:
    python research/realism/real_speech_transfer.py --model logs/default/runs/<run>/checkpoints/last.ckpt \\
        --synthetic-root data/default_2mix --out real_transfer.json
    python research/realism/real_speech_transfer.py --build-only --n-src 2 --mix-dir /tmp/realmix
    python research/realism/real_speech_transfer.py --smoke --speech-dir tests_tmp/speech --out r.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

SAMPLE_RATE = 8000
BUILD_VERSION = 1
DEFAULT_CACHE = Path("data/real_speech")
# speaker key -> (packages, sound folder glob below usr/share/asterisk/sounds, sex)
SPEAKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "allison": (("asterisk-core-sounds-en-wav", "asterisk-core-sounds-es-wav"), "female"),
    "june": (("asterisk-core-sounds-fr-wav",), "female"),
    "carlo": (("asterisk-core-sounds-it-wav",), "male"),
    "ru": (("asterisk-core-sounds-ru-wav",), "female"),
    "menardi": (("asterisk-prompt-it-menardi-wav",), "female"),
    "es-co": (("asterisk-prompt-es-co",), "female"),
    "armelle": (("asterisk-prompt-fr-armelle",), "female"),
}
PACKAGES = tuple(p for pkgs, _ in SPEAKERS.values() for p in pkgs)
APT_COMMAND = "apt-get update && apt-get download " + " ".join(PACKAGES)
AUDIO_SUFFIXES = (".wav", ".gsm")
# Generator options that shape the real set's noise, pinned so that tuning the generator's
# defaults never changes the dev set (the babble talkers come from these pool settings).
NOISE_OPTIONS = {
    "speakers": (200, 40, 40, 60),
    "english_fraction": 0.7,
    "klatt_fraction": 0.1,
    "breath_fraction": 0.35,
    "babble_bank": 24,
    "babble_talkers": (3, 7),
}


class SetupError(RuntimeError):
    """Missing speech/tools: the message says what to install or pass."""


# --------------------------------------------------------------------------------------------
# Speech corpus
# --------------------------------------------------------------------------------------------
def fetch_packages(cache: Path) -> None:
    """``apt-get download`` the packages into ``cache/debs`` (needs apt and the Debian archive)."""
    if shutil.which("apt-get") is None:
        raise SetupError(
            "apt-get is not available here. On a Debian/Ubuntu machine run:\n"
            f"  mkdir -p {cache}/debs && cd {cache}/debs && {APT_COMMAND}\n"
            "then copy the .deb files (or the unpacked folders) here and pass --speech-dir."
        )
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in PACKAGES if not list(debs.glob(f"{p}_*.deb"))]
    if not missing:
        return
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
    proc = subprocess.run(
        ["apt-get", "download", *missing], cwd=debs, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SetupError(
            f"apt-get download failed ({proc.stderr.strip()[-300:]}). Run by hand:\n"
            f"  mkdir -p {debs} && cd {debs} && {APT_COMMAND}"
        )


def unpack_packages(cache: Path) -> Path:
    """``dpkg -x`` every downloaded .deb into ``cache/pkgs/<package>``; returns ``cache/pkgs``."""
    pkgs = cache / "pkgs"
    for deb in sorted((cache / "debs").glob("*.deb")):
        name = deb.name.split("_")[0]
        if (pkgs / name).is_dir():
            continue
        if shutil.which("dpkg") is None:
            raise SetupError(f"dpkg is not available to unpack {deb}: apt-get install dpkg")
        tmp = pkgs / f"{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)  # dpkg -x makes the last folder only
        subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(pkgs / name)
    return pkgs


def gsm_readable() -> bool:
    """Whether libsndfile here decodes GSM 6.10 (the es-co and armelle packages)."""
    return "GSM610" in sf.available_subtypes("RAW")


def speaker_files(speech_dir: Path, include_gsm: bool = True) -> dict[str, list[Path]]:
    """Audio files per speaker found under ``speech_dir``.

    ``speech_dir`` is either the unpacked packages folder (``<package>/usr/share/asterisk/
    sounds/...``) or a plain folder with one sub-folder per speaker key (stand-ins for tests).

    Returns:
        ``{speaker: sorted files}`` for the speakers with at least one file.
    """
    found: dict[str, list[Path]] = {}
    for key, (packages, _sex) in SPEAKERS.items():
        files: list[Path] = []
        roots = [speech_dir / p / "usr" / "share" / "asterisk" / "sounds" for p in packages]
        roots.append(speech_dir / key)
        for root in roots:
            if root.is_dir():
                files += [
                    f for f in root.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file()
                ]
        if not include_gsm:
            files = [f for f in files if f.suffix.lower() != ".gsm"]
        if files:
            found[key] = sorted(set(files))
    return found


def prompt_key(path: Path) -> str:
    """``<folder>/<file>``: names a prompt across packages (recorded in the manifest)."""
    return f"{path.parent.name}/{path.name}"


def split_of(path: Path) -> str:
    """Stable dev/test assignment of one prompt file by a hash of its name."""
    h = hashlib.sha1(prompt_key(path).encode()).digest()[0]
    return "dev" if h % 2 == 0 else "test"


def read_prompt(path: Path) -> np.ndarray:
    """One prompt as float64 mono at 8 kHz (resampled if needed)."""
    try:
        x, sr = sf.read(str(path), dtype="float64", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise SetupError(f"cannot read {path}: {err}") from err
    x = x.mean(axis=1)
    if sr != SAMPLE_RATE:
        from usgm.data.synth.dsp import resample

        x = resample(x, sr, SAMPLE_RATE)
    return x


# --------------------------------------------------------------------------------------------
# Mixtures
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildSpec:
    """What defines a built set (recorded in its manifest; a mismatch rebuilds)."""

    n_src: int
    n_mix: int
    split: str
    seed: int
    utterance_s: tuple[float, float] = (3.0, 6.0)
    babble: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": BUILD_VERSION,
            "n_src": self.n_src,
            "n_mix": self.n_mix,
            "split": self.split,
            "seed": self.seed,
            "utterance_s": list(self.utterance_s),
            "babble": self.babble,
            "sample_rate": SAMPLE_RATE,
        }


def make_utterance(files: Sequence[Path], rng: np.random.Generator, target_s: float) -> tuple:
    """Concatenate random consecutive prompts of one speaker up to ``target_s`` seconds.

    Returns:
        ``((T,) float64, [file names])``.
    """
    start = int(rng.integers(len(files)))
    parts, names, total = [], [], 0
    i = start
    while total < target_s * SAMPLE_RATE and len(names) < len(files):
        x = read_prompt(files[i % len(files)])
        if x.size:
            parts.append(x)
            names.append(prompt_key(files[i % len(files)]))
            total += len(x)
        i += 1
    return np.concatenate(parts) if parts else np.zeros(0), names


_BANKS: dict[int, list[np.ndarray]] = {}


def babble_bank(seed: int, n: int = 24) -> list[np.ndarray]:
    """The generator's distant-talker bank from its held-out *test* babble talkers.

    Synthesised once per process with eSpeak (its first use in the process, so the same seed
    gives the same bank) and kept for the other sets.
    """
    if seed in _BANKS:
        return _BANKS[seed]
    import tempfile

    from usgm.data.synth.espeak import Espeak, make_data_dir
    from usgm.data.synth.noise import make_babble_bank
    from usgm.data.synth.options import SynthOptions
    from usgm.data.synth.voices import LANGUAGE_FILES, babble_subpool, make_pools

    opts = SynthOptions(**{**NOISE_OPTIONS, "babble_bank": n})
    talkers = babble_subpool(make_pools(seed, opts)["babble"], "test")
    with tempfile.TemporaryDirectory(prefix="usgm-real-") as tmp:
        data = make_data_dir(
            Path(tmp) / "espeak-ng-data",
            {s.language: LANGUAGE_FILES[s.language] for s in talkers},
            {s.variant: s.variant_text() for s in talkers},
        )
        tts = Espeak(data)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7000]))
        _BANKS[seed] = make_babble_bank(tts, talkers, rng, SAMPLE_RATE, opts)
    return _BANKS[seed]


def build_set(spec: BuildSpec, speech: dict[str, list[Path]], out: Path, log=print) -> Path:
    """Build ``spec.n_mix`` mixtures into ``out`` (atomic: written to a sibling, then renamed).

    Raises:
        SetupError: fewer than ``n_src`` speakers have files in this split.
    """
    from usgm.data.mixing import mix_librimix, quantize_mixture
    from usgm.data.synth.noise import cafe_noise
    from usgm.data.synth.options import SynthOptions

    pools = {k: [f for f in v if split_of(f) == spec.split] for k, v in speech.items()}
    pools = {k: v for k, v in pools.items() if v}
    if len(pools) < spec.n_src:
        raise SetupError(
            f"{len(pools)} speaker(s) with {spec.split} files; {spec.n_src}-speaker mixtures need "
            f"{spec.n_src} different people. Get the packages: {APT_COMMAND}"
        )
    keys = sorted(pools)
    opts = SynthOptions(**NOISE_OPTIONS)
    bank = babble_bank(spec.seed) if spec.babble else []
    tmp = out.parent / f"{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows = []
    for i in range(spec.n_mix):
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 8000, spec.n_src, i]))
        who = [keys[j] for j in rng.choice(len(keys), size=spec.n_src, replace=False)]
        utts = [make_utterance(pools[k], rng, rng.uniform(*spec.utterance_s)) for k in who]
        sources = [u[0] for u in utts]
        n = min(len(s) for s in sources)
        if bank:
            noise = cafe_noise(rng, n, SAMPLE_RATE, bank, opts)
        else:  # no eSpeak: the noise model without its babble part
            from usgm.data.synth import dsp
            from usgm.data.synth.noise import transients

            noise = dsp.coloured_noise(rng, n, SAMPLE_RATE, slope_db=rng.uniform(0, 6))
            noise = noise + transients(rng, n, SAMPLE_RATE, 0.5)
        scaled, scaled_noise = mix_librimix(
            sources, noise, SAMPLE_RATE, rng, opts.speech_lufs, opts.noise_lufs, 0.9, "min"
        )
        q = quantize_mixture(scaled, scaled_noise)
        mid = f"r{spec.n_src}{spec.split[0]}{i:04d}"
        for j, s in enumerate(q.sources):
            sf.write(tmp / f"{mid}_s{j + 1}.flac", s, SAMPLE_RATE, subtype="PCM_16")
        sf.write(tmp / f"{mid}_noise.flac", q.noise, SAMPLE_RATE, subtype="PCM_16")
        rows.append({"id": mid, "speakers": who, "length": int(n), "prompts": [u[1] for u in utts]})
    manifest = {"spec": spec.to_dict(), "mixtures": rows}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log(f"built {spec.n_mix} real-speech {spec.n_src}-speaker {spec.split} mixtures in {out}")
    return out


def set_dir(mix_dir: Path, spec: BuildSpec) -> Path:
    return mix_dir / f"real{spec.n_src}mix_{spec.split}"


def load_set(folder: Path, spec: BuildSpec | None = None) -> list[dict[str, Any]] | None:
    """Read a built set: per mixture ``{"id", "speakers", "sources" (C, T) int16, "noise"}``.

    Returns None when the folder is missing or was built with another spec.
    """
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if spec is not None and manifest.get("spec") != spec.to_dict():
        return None
    out = []
    n_src = manifest["spec"]["n_src"]
    for row in manifest["mixtures"]:
        srcs = [
            sf.read(str(folder / f"{row['id']}_s{j + 1}.flac"), dtype="int16")[0]
            for j in range(n_src)
        ]
        noise = sf.read(str(folder / f"{row['id']}_noise.flac"), dtype="int16")[0]
        out.append({**row, "sources": np.stack(srcs), "noise": noise})
    return out


def mixtures_from_set(items: list[dict[str, Any]]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(id, mix_both float32 (T,), sources float32 (C, T))`` with exact int16 sums."""
    out = []
    for it in items:
        src = it["sources"].astype(np.int32)
        mix = src.sum(0) + it["noise"].astype(np.int32)
        out.append(
            (it["id"], (mix / 32768.0).astype(np.float32), (src / 32768.0).astype(np.float32))
        )
    return out


def synthetic_mixtures(root: Path, n_src: int, limit: int | None, split: str = "test"):
    """A generated corpus's split (the test split by default) as ``(id, mix, sources)``, read
    with usgm's loader."""
    from usgm.data.librimix import load_split

    utts = load_split(root, split, n_src=n_src, validate="none", limit=limit)
    for u in utts:
        mix = sf.read(str(u.mixture), dtype="float32")[0]
        srcs = np.stack([sf.read(str(p), dtype="float32")[0] for p in u.sources])
        yield u.id, mix, srcs


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------
OVERLAP_BANDS = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.0))


def overlap_fraction(
    srcs: np.ndarray, sr: int = 8000, frame_s: float = 0.02, rel_db: float = -30.0
) -> float:
    """Fraction of 20 ms frames in which every source is active.

    A frame is active for a source when its RMS is within ``rel_db`` of that source's loudest
    frame (a plain energy VAD: the references are clean, so no noise model is needed).

    Args:
        srcs: ``(n_src, time)`` clean sources of one mixture.
    """
    n = int(sr * frame_s)
    k = srcs.shape[-1] // n
    if k == 0:
        return 0.0
    rms = np.sqrt((srcs[:, : k * n].reshape(srcs.shape[0], k, n) ** 2).mean(-1) + 1e-12)
    act = rms > rms.max(-1, keepdims=True) * 10 ** (rel_db / 20)
    return float(act.all(0).mean())


def by_overlap(per_mixture: dict[str, float], overlap: dict[str, float]) -> dict[str, Any]:
    """SI-SNRi per band of overlap (:data:`OVERLAP_BANDS`), the mean overlap, and the
    correlation between overlap and SI-SNRi over the mixtures."""
    ids = list(per_mixture)
    o = np.array([overlap[u] for u in ids])
    v = np.array([per_mixture[u] for u in ids])
    bands = {}
    for lo, hi in OVERLAP_BANDS:
        m = (o >= lo) & ((o < hi) | (hi == 1.0))
        if m.any():
            bands[f"{lo:.1f}-{hi:.1f}"] = _stats(v[m].tolist())
    corr = float(np.corrcoef(o, v)[0, 1]) if len(ids) > 2 and o.std() > 0 else float("nan")
    return {"overlap_mean": float(o.mean()), "overlap_corr": corr, "by_overlap": bands}


def score(model, mixtures, device: str = "cpu") -> dict[str, Any]:
    """Mean SI-SNR / SI-SNRi (utterance-level PIT, THE usgm SI-SNR) over ``mixtures``.

    Also scores perfect denoising alone: every output the exact clean mixture (sum of the
    sources). A model below that line removes the noise but harms the speech more than it
    separates it. And the model's own denoising, from the sum of its outputs, each first
    given the sign of its PIT-assigned reference (SI-SNR is blind to the sign, and a model may
    learn to flip one output; with softmax SS masks and no flip the sum is the decoded SE
    estimate): ``own_denoise_si_snri`` puts that sum in every output, ``se_gain_db`` is how
    much closer the sum is to the clean mixture than the input is (SI-SNR against the clean
    mixture), and ``split_gain_db`` = ``si_snri`` − ``own_denoise_si_snri`` is what the split
    adds beyond the model's own denoising.

    Returns:
        Means, ``si_snri_stats`` (mean/std/95 % CI), ``denoise_only_si_snri``, the three
        own-denoising numbers, SI-SNRi by how much the sources overlap (:func:`by_overlap`)
        and ``per_mixture`` (mixture ID → SI-SNRi, dB).
    """
    import torch

    from usgm.losses import pit_si_snr, si_snr

    sisnr, sisnri, base, denoise, own, se_gain, ids = [], [], [], [], [], [], []
    overlap: dict[str, float] = {}
    with torch.inference_mode():
        for uid, mix, srcs in mixtures:
            m = torch.from_numpy(mix).to(device)[None]
            ref = torch.from_numpy(srcs).to(device)[None]
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device != "cpu"):
                est = model(m).est
            est = est.float()
            best, perm = pit_si_snr(est, ref)
            b = si_snr(m.expand_as(ref), ref).mean(-1)
            clean_mix = ref.sum(1, keepdim=True)
            clean = si_snr(clean_mix.expand_as(ref), ref).mean(-1)
            # SI-SNR ignores an output's sign, and models do learn flipped outputs: align each
            # to its PIT-assigned reference before adding them up.
            aligned = est.gather(1, perm[..., None].expand_as(est))
            flipped = (aligned * ref).sum(-1, keepdim=True) < 0
            est_mix = torch.where(flipped, -aligned, aligned).sum(1, keepdim=True)
            own_db = si_snr(est_mix.expand_as(ref), ref).mean(-1)
            gain = si_snr(est_mix, clean_mix) - si_snr(m[:, None], clean_mix)
            sisnr.append(float(best))
            base.append(float(b))
            sisnri.append(float(best - b))
            denoise.append(float(clean - b))
            own.append(float(own_db - b))
            se_gain.append(float(gain.mean()))
            overlap[uid] = overlap_fraction(np.asarray(srcs))
            ids.append(uid)
    n = len(sisnri)
    if not n:
        return {"n": 0, "si_snri": float("nan"), "si_snr": float("nan"),
                "input_si_snr": float("nan"), "si_snri_stats": None}  # fmt: skip
    return {
        "n": n,
        "si_snri": float(np.mean(sisnri)),
        "si_snr": float(np.mean(sisnr)),
        "input_si_snr": float(np.mean(base)),
        "si_snri_stats": _stats(sisnri),
        "denoise_only_si_snri": float(np.mean(denoise)),
        "own_denoise_si_snri": float(np.mean(own)),
        "se_gain_db": float(np.mean(se_gain)),
        "split_gain_db": float(np.mean(sisnri) - np.mean(own)),
        **by_overlap(dict(zip(ids, sisnri, strict=True)), overlap),
        "per_mixture": {u: round(v, 3) for u, v in zip(ids, sisnri, strict=True)},
    }


def _stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "n": int(a.size),
            "ci95": 1.96 * float(a.std()) / math.sqrt(a.size)}  # fmt: skip


def breakdown(per_mixture: dict[str, float], items: list[dict[str, Any]]) -> dict[str, Any]:
    """SI-SNRi of a real set by speaker and by the sexes of the pair (e.g. ``FF``, ``FM``).

    Args:
        per_mixture: mixture ID → SI-SNRi (from :func:`score`).
        items: the set's mixtures (:func:`load_set`), for their speakers.

    Returns:
        ``{"by_speaker": {key: stats}, "by_sexes": {"FF": stats, ...}}``; a mixture counts once
        for each of its speakers.
    """
    by_speaker: dict[str, list[float]] = {}
    by_sexes: dict[str, list[float]] = {}
    for it in items:
        v = per_mixture[it["id"]]
        for key in it["speakers"]:
            by_speaker.setdefault(key, []).append(v)
        sexes = "".join(sorted(SPEAKERS[k][1][0].upper() for k in it["speakers"]))
        by_sexes.setdefault(sexes, []).append(v)
    return {
        "by_speaker": {k: _stats(v) for k, v in sorted(by_speaker.items())},
        "by_sexes": {k: _stats(v) for k, v in sorted(by_sexes.items())},
    }


# --------------------------------------------------------------------------------------------
# Channel probe
# --------------------------------------------------------------------------------------------
# The real set's people share one studio chain; training pairs almost always differ in theirs.
# Scoring the same mixtures with one source given another chain (and, as the control, every
# source given one shared draw of it) measures how much a model separates by channel, not voice.
CHANNEL_PROBES = ("one_eq", "both_eq", "one_codec", "both_codec")


def channel_chain(
    kind: str, x: np.ndarray, rng: np.random.Generator, sr: int = SAMPLE_RATE
) -> np.ndarray:
    """One draw of a recording chain of the generator (:mod:`usgm.data.synth.dsp`).

    Args:
        kind: ``eq`` (random EQ within ±6 dB, the generator's ``eq_db`` default, then a random
            telephone/microphone band limit) or ``codec`` (GSM 6.10 round trip at 8 kHz).
        x: ``(time,)`` float signal.

    Returns:
        ``(time,)`` float64, rescaled to the RMS of ``x``.
    """
    from usgm.data.synth import dsp

    if kind == "eq":
        y = dsp.band_limit(dsp.random_eq(x, sr, rng, 6.0), sr, rng)
    elif kind == "codec":
        y = dsp.codec_round_trip(x, sr, "gsm")
    else:
        raise ValueError(f"unknown channel chain {kind!r} (eq or codec)")
    return y * (np.sqrt(np.mean(x**2)) / max(np.sqrt(np.mean(y**2)), 1e-12))


def channel_probe_mixtures(
    items: list[dict[str, Any]], probe: str, seed: int = 0
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """A real set's mixtures with their sources put through :func:`channel_chain`.

    ``one_*``: the last source alone gets the chain, so the people now differ in channel;
    ``both_*``: every source gets the same draw of it (the control: same chain, no difference).
    The noise is unchanged, each source keeps its RMS, and the processed sources are the
    references.

    Returns:
        ``(id, mix float32 (T,), sources float32 (C, T))`` as :func:`mixtures_from_set`.
    """
    where, _, kind = probe.partition("_")
    if probe not in CHANNEL_PROBES:
        raise ValueError(f"unknown channel probe {probe!r} (one of {', '.join(CHANNEL_PROBES)})")
    out = []
    for k, it in enumerate(items):
        src = it["sources"].astype(np.float64) / 32768.0
        new = src.copy()
        rng = np.random.default_rng(1000 * (seed + 1) + k)
        if where == "one":
            new[-1] = channel_chain(kind, src[-1], rng)
        else:
            state = rng.bit_generator.state
            for i in range(len(src)):
                rng.bit_generator.state = state  # one draw for all: the chain, not a difference
                new[i] = channel_chain(kind, src[i], rng)
        mix = new.sum(0) + it["noise"].astype(np.float64) / 32768.0
        out.append((it["id"], mix.astype(np.float32), new.astype(np.float32)))
    return out


def channel_probe(model, items: list[dict[str, Any]], base: dict[str, Any], device: str = "cpu"):
    """SI-SNRi of the set under each of :data:`CHANNEL_PROBES`, with the paired change against
    the plain set (``base``: :func:`score` of it): ``{probe: {si_snri, si_snri_stats,
    own_denoise_si_snri, split_gain_db, by_overlap, change}}``."""
    out = {}
    for probe in CHANNEL_PROBES:
        r = score(model, channel_probe_mixtures(items, probe), device)
        diff = [v - base["per_mixture"][u] for u, v in r["per_mixture"].items()]
        out[probe] = {
            k: r[k]
            for k in ("si_snri", "si_snri_stats", "own_denoise_si_snri", "split_gain_db",
                      "by_overlap")
        } | {"change": _stats(diff)}  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="checkpoint (.ckpt) or usgm-export file")
    p.add_argument("--synthetic-root", default="data/default_2mix", help="generated corpus root")
    p.add_argument("--max-synthetic", type=int, default=None, help="first N test mixtures only")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="debs/ and pkgs/ live here")
    p.add_argument("--speech-dir", type=Path, default=None, help="unpacked packages (or stand-ins)")
    p.add_argument("--mix-dir", type=Path, default=None, help="built sets (default: CACHE/mix)")
    p.add_argument("--fetch", action="store_true", help="apt-get download missing packages")
    p.add_argument("--n-src", type=int, nargs="+", default=[2, 3], help="sets to build/score")
    p.add_argument("--n-mix", type=int, default=80, help="mixtures per set")
    p.add_argument("--split", default="dev", choices=["dev", "test"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-gsm", action="store_true", help="leave out the two GSM 6.10 packages")
    p.add_argument("--no-babble", action="store_true", help="noise without eSpeak babble")
    p.add_argument("--build-only", action="store_true", help="build the sets, score nothing")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None, help="JSON results")
    p.add_argument("--smoke", action="store_true", help="tiny sets, no babble (tests)")
    p.add_argument(
        "--channel-probe",
        action="store_true",
        help="also score the real set with one source given another recording chain, and "
        "with one shared chain (channel_probe: how much the model separates by channel)",
    )
    return p


def _prepare(args: argparse.Namespace, mix_dir: Path, n_src: int, log) -> list[dict] | None:
    spec = BuildSpec(
        n_src=n_src,
        n_mix=args.n_mix,
        split=args.split,
        seed=args.seed,
        utterance_s=(1.0, 2.0) if args.smoke else (3.0, 6.0),
        babble=not (args.no_babble or args.smoke),
    )
    folder = set_dir(mix_dir, spec)
    items = load_set(folder, spec)
    if items is not None:
        return items
    speech_dir = args.speech_dir
    if speech_dir is None:
        if args.fetch:
            fetch_packages(args.cache)
        if (args.cache / "debs").is_dir():
            unpack_packages(args.cache)
        speech_dir = args.cache / "pkgs"
    include_gsm = not args.no_gsm
    if include_gsm and not gsm_readable():
        log("libsndfile here cannot decode GSM 6.10: leaving out es-co and armelle")
        include_gsm = False
    speech = speaker_files(speech_dir, include_gsm) if speech_dir.is_dir() else {}
    if len(speech) < n_src:
        raise SetupError(
            f"no built set in {folder} and only {len(speech)} speaker(s) of real speech under "
            f"{speech_dir}. Get the Asterisk prompts (Debian archive):\n"
            f"  mkdir -p {args.cache}/debs && cd {args.cache}/debs && {APT_COMMAND}\n"
            f"then rerun (the script unpacks them with dpkg -x), or pass --fetch, or --mix-dir "
            "with sets built elsewhere."
        )
    build_set(spec, speech, folder, log)
    return load_set(folder, spec)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.n_mix = min(args.n_mix, 4)
        args.max_synthetic = args.max_synthetic or 2
    log = lambda msg: print(f"[real-speech] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    mix_dir = args.mix_dir or (args.cache / "mix")
    t0 = time.perf_counter()
    try:
        sets = {n: _prepare(args, mix_dir, n, log) for n in args.n_src}
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.build_only:
        log(f"sets ready in {mix_dir} ({time.perf_counter() - t0:.1f} s)")
        return 0
    if not args.model:
        print("error: --model is needed (or --build-only)", file=sys.stderr)
        return 2

    import torch

    import usgm

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    try:
        model, meta = usgm.load_model(args.model, device=args.device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n_src = int(meta["n_src"])
    result: dict[str, Any] = {
        "model": str(args.model),
        "n_src": n_src,
        "method": meta.get("method"),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "device": args.device,
        "real": {},
        "synthetic": None,
    }
    for n, items in sets.items():
        if n != n_src:
            result["real"][f"{n}spk"] = {"skipped": f"the model separates {n_src} speakers"}
            continue
        r = score(model, mixtures_from_set(items), args.device)
        r |= breakdown(r["per_mixture"], items) if r["n"] else {}
        r["split"] = args.split
        r["speakers"] = sorted({s for it in items for s in it["speakers"]})
        if args.channel_probe and r["n"]:
            r["channel_probe"] = channel_probe(model, items, r, args.device)
        result["real"][f"{n}spk"] = r
    syn_root = Path(args.synthetic_root)
    if (syn_root / "DONE").exists() or (syn_root / "wav8k").is_dir():
        result["synthetic"] = score(
            model, synthetic_mixtures(syn_root, n_src, args.max_synthetic), args.device
        )
        result["synthetic"]["root"] = str(syn_root)
    else:
        log(f"no synthetic corpus at {syn_root}: synthetic score left out")
    real = result["real"].get(f"{n_src}spk", {})
    if result["synthetic"] and "si_snri" in real:
        syn = result["synthetic"]["si_snri"]
        result["real_over_synthetic"] = real["si_snri"] / syn if syn else None
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(format_table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


def format_table(result: dict[str, Any]) -> str:
    lines = [f"model {result['model']} ({result['n_src']} speakers)"]
    lines.append(
        f"{'set':<28s} {'n':>5s} {'input SI-SNR':>13s} {'SI-SNR':>8s} {'SI-SNRi':>8s} "
        f"{'denoise only':>13s} {'own denoise':>12s} {'SE gain':>8s}"
    )
    rows = [(f"real {k} ({v.get('split', '')})", v) for k, v in result["real"].items()]
    if result["synthetic"]:
        rows.append(("synthetic test", result["synthetic"]))
    for name, v in rows:
        if "si_snri" not in v:
            lines.append(f"{name:<28s} {v.get('skipped', '')}")
            continue
        lines.append(
            f"{name:<28s} {v['n']:5d} {v['input_si_snr']:13.2f} {v['si_snr']:8.2f} "
            f"{v['si_snri']:8.2f} {v.get('denoise_only_si_snri', float('nan')):13.2f} "
            f"{v.get('own_denoise_si_snri', float('nan')):12.2f} "
            f"{v.get('se_gain_db', float('nan')):8.2f}"
        )
        if v.get("by_overlap"):
            parts = [f"{k} {s['mean']:+.2f} (n={s['n']})" for k, s in v["by_overlap"].items()]
            lines.append(
                f"    overlap  mean {v['overlap_mean']:.2f}, corr {v['overlap_corr']:+.2f}: "
                + ", ".join(parts)
            )
        if v.get("channel_probe"):
            parts = [
                f"{k} {c['si_snri']:+.2f} ({c['change']['mean']:+.2f} ± {c['change']['ci95']:.2f})"
                for k, c in v["channel_probe"].items()
            ]
            lines.append("    channel  " + ", ".join(parts))
        for group in ("by_sexes", "by_speaker"):
            if v.get(group):
                parts = [f"{k} {s['mean']:+.2f} (n={s['n']})" for k, s in v[group].items()]
                lines.append(f"    {group[3:]:<8s} " + ", ".join(parts))
    if result.get("real_over_synthetic") is not None:
        lines.append(f"real / synthetic SI-SNRi: {result['real_over_synthetic']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
