"""One shard of the default corpus, synthesised in a fresh interpreter.

Run as ``python -m usgm.data.synth.worker TASK.pkl RESULT.pkl`` by :mod:`usgm.data.synth.writer`:
a new process per shard means eSpeak starts from the same state for the same shard, every time
(its hidden state carries across utterances within a process). A plain subprocess rather than a
multiprocessing "spawn" child also never re-imports the caller's ``__main__`` (a training script
would drag torch and Lightning into every worker, and an unguarded script would recurse).
"""

from __future__ import annotations

import pickle
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from usgm.data.mixing import mix_librimix, quantize_mixture
from usgm.data.synth.options import SynthOptions
from usgm.data.synth.recorded import RecordedSpeaker
from usgm.data.synth.voices import Speaker

_SPLIT_SEED_CODE = {"train": 1, "dev": 2, "test": 3}


@dataclass(frozen=True)
class ShardTask:
    """Everything one worker process needs (plain, picklable data)."""

    split: str
    shard: int
    start: int
    stop: int
    n_src: int
    seed: int
    sample_rate: int
    options: SynthOptions
    voice_data: str
    split_dir: str
    speakers: tuple[Speaker, ...]
    babble: tuple[Speaker, ...]
    recorded: tuple[RecordedSpeaker, ...] = ()


def mixture_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """Seed of one mixture's random generator."""
    return np.random.SeedSequence([seed, 3000, _SPLIT_SEED_CODE[split], index])


def shard_seed(seed: int, split: str, shard: int) -> np.random.SeedSequence:
    """Seed of one shard's random generator (its babble bank)."""
    return np.random.SeedSequence([seed, 2000, _SPLIT_SEED_CODE[split], shard])


def run_shard(task: ShardTask) -> list[tuple[int, str, int]]:
    """Synthesise, mix and write one shard's mixtures (runs in a fresh process).

    Returns:
        ``(index, mixture_ID, length)`` per mixture.
    """
    # Imported here: the synthesiser stack is only needed inside workers.
    from usgm.data.synth.dsp import long_term_spectrum_db, spectrum_distance
    from usgm.data.synth.espeak import Espeak
    from usgm.data.synth.noise import make_babble_bank, mixture_noise
    from usgm.data.synth.speech import render_utterance
    from usgm.data.synth.voicepacks import recording_group

    opts, sr = task.options, task.sample_rate
    tts = Espeak(task.voice_data)
    bank = make_babble_bank(
        tts, list(task.babble), np.random.default_rng(shard_seed(task.seed, task.split, task.shard)),
        sr, opts,
    )  # fmt: skip
    out = Path(task.split_dir)
    rows = []
    for index in range(task.start, task.stop):
        rng = np.random.default_rng(mixture_seed(task.seed, task.split, index))
        picks = rng.choice(len(task.speakers), size=task.n_src, replace=False)
        speakers: list = [task.speakers[i] for i in picks]
        sources = []
        # Options at 0 draw nothing, so that corpora made without them stay bit-identical.
        same_group = opts.same_recording > 0 and rng.random() < opts.same_recording
        channel_seed = None
        if opts.shared_channel > 0 and rng.random() < opts.shared_channel:
            channel_seed = int(rng.integers(2**62))
        self_pair = opts.self_pair > 0 and rng.random() < opts.self_pair
        if self_pair and channel_seed is None:
            channel_seed = int(rng.integers(2**62))
        colour = opts.colour_match > 0 and rng.random() < opts.colour_match
        group = None  # recording source of the first recorded person who has one
        first = None  # the first recorded person, again in a self pair
        first_colour: np.ndarray | None = None  # their source's spectrum: colour matching's target
        speeds: list[float] = []

        for j, spk in enumerate(speakers):
            # Recorded people are drawn without replacement too: different people per mixture.
            free = [r for r in task.recorded if r not in speakers]
            if same_group and group is not None:
                free = [r for r in free if recording_group(r.spk_id) == group] or free
            if self_pair and first is not None:
                free = [first]
            if free and opts.recorded_fraction > 0 and rng.random() < opts.recorded_fraction:
                taken = speeds if self_pair else []
                if colour and first_colour is not None and len(free) > 1:
                    # The closest in colour of a few rendered people (their own speed and chain).
                    picks = rng.choice(len(free), min(opts.colour_candidates, len(free)), False)
                    tries = [_render_source(free[i], rng, sr, opts, channel_seed, taken)
                             for i in picks]  # fmt: skip
                    dist = [spectrum_distance(long_term_spectrum_db(x), first_colour)
                            for x, _ in tries]  # fmt: skip
                    best = int(np.argmin(dist))
                    speakers[j] = free[picks[best]]
                    x, speed = tries[best]
                else:
                    speakers[j] = free[int(rng.integers(len(free)))]
                    x, speed = _render_source(speakers[j], rng, sr, opts, channel_seed, taken)
                if group is None:
                    group = recording_group(speakers[j].spk_id)
                if first is None:
                    first = speakers[j]
                    if colour:  # once per mixture, not once per candidate
                        first_colour = long_term_spectrum_db(x)
                speeds.append(speed)
                sources.append(x)
            else:
                sources.append(render_utterance(tts, spk, rng, sr, opts))
        lengths = [len(s) for s in sources]
        n = min(lengths) if opts.mode == "min" else max(lengths)
        noise = mixture_noise(rng, n, sr, bank, opts)
        scaled, scaled_noise = mix_librimix(
            sources, noise, sr, rng, opts.speech_lufs, opts.noise_lufs, opts.max_peak, opts.mode
        )
        q = quantize_mixture(scaled, scaled_noise)
        mixture_id = "_".join(
            f"{spk.spk_id}-{index * task.n_src + j:06d}" for j, spk in enumerate(speakers)
        )
        files = {"mix_both": q.mix_both, "mix_clean": q.mix_clean, "noise": q.noise}
        files |= {f"s{j + 1}": s for j, s in enumerate(q.sources)}
        for kind, data in files.items():
            _write_wav(out / kind / f"{mixture_id}.wav", data, sr)
        rows.append((index, mixture_id, n))
    return rows


def _render_source(
    person, rng: np.random.Generator, sr: int, opts, channel_seed: int | None, taken: list[float]
) -> tuple[np.ndarray, float]:
    """One recorded source: an utterance of ``person`` at a drawn speed, through the recording
    chain (``channel_seed``: the mixture's shared draw). ``taken``: speed factors to keep apart
    from (a self pair's). Returns the source (T,) and its speed factor."""
    from usgm.data.synth.recorded import render_recorded
    from usgm.data.synth.speech import apply_channel

    target_s = rng.uniform(*opts.utterance_s)
    speed = _speed_apart(rng, opts.recorded_speed, taken)
    x = render_recorded(person, rng, sr, target_s, speed, opts.recorded_gap)
    chain = rng if channel_seed is None else np.random.default_rng(channel_seed)
    return apply_channel(x, chain, sr, opts), speed


#: Smallest ratio between the speed factors of one person's sources in a self pair.
SELF_PAIR_RATIO = 1.15


def _speed_apart(rng: np.random.Generator, span: tuple[float, float], taken: list[float]) -> float:
    """A speed factor from ``span``, a factor ``SELF_PAIR_RATIO`` from each of ``taken``.

    Draws uniformly, as without self pairs, when ``taken`` is empty; when ``span`` leaves no
    such factor after 32 tries it returns the try farthest (in log ratio) from the others.
    """
    best, best_gap = span[0], -1.0
    for _ in range(32 if taken else 1):
        speed = float(rng.uniform(*span))
        gap = min((abs(np.log(speed / t)) for t in taken), default=np.inf)
        if gap >= np.log(SELF_PAIR_RATIO):
            return speed
        if gap > best_gap:
            best, best_gap = speed, gap
    return best


def _write_wav(path: Path, data: np.ndarray, sr: int) -> None:
    """Writes 16-bit PCM; a failed write names the file and the free space left.

    libsndfile reports a full disk only as "System error", so the free space is added here.
    """
    try:
        sf.write(path, data, sr, subtype="PCM_16")
    except (OSError, sf.LibsndfileError) as err:
        free = shutil.disk_usage(path.parent).free / 2**20
        raise OSError(f"could not write {path} ({err}); {free:.0f} MiB free on that disk") from err


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: read a pickled :class:`ShardTask`, write the pickled rows."""
    task_path, result_path = argv if argv is not None else sys.argv[1:]
    task = pickle.loads(Path(task_path).read_bytes())
    rows = run_shard(task)
    tmp = Path(result_path + ".tmp")
    tmp.write_bytes(pickle.dumps(rows))
    tmp.rename(result_path)  # the result appears complete or not at all
    return 0


if __name__ == "__main__":
    sys.exit(main())
