"""Options of the default-corpus generator, one plain dataclass passed to every stage.

Every field is plain data (numbers, strings, tuples, None) so the options pickle into the worker
processes and are recorded as JSON in the dataset's ``DONE`` marker. New realism options (reverb,
F0 jitter, more noise types …) are fields here. Their defaults are the realism set chosen for issue 5
(voice diversity, prosody drift, jitter/shimmer, level changes, room tone, reverb, EQ, band
limits, more noise kinds); setting a realism field to 0 / ``("cafe",)`` turns that step off and
draws nothing from the random generator for it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from usgm.data.errors import DataError

SPLITS = ("train", "dev", "test")
NOISE_KINDS = ("cafe", "speech_shaped", "machinery", "traffic")
# Folder names of the LibriMix layout for each generated split.
SPLIT_DIRS = {"train": "train-360", "dev": "dev", "test": "test"}
#: Mixtures per split and seed of a corpus whose request leaves them out.
DEFAULT_COUNTS = {"n_train": 3000, "n_dev": 200, "n_test": 200}
DEFAULT_SEED = 0


#: Options added after corpora were first written, each at the value that reproduces the output
#: from before it existed: a corpus whose ``DONE`` lacks such a key was built that way, so it is
#: still current where that value is asked for (any other missing key marks a corpus stale).
ADDED_LATER: dict[str, Any] = {
    "recorded_gap": (0.05, 0.4),
    "same_recording": 0.0,
    "shared_channel": 0.0,
    "self_pair": 0.0,
    "colour_match": 0.0,
    "colour_candidates": 4,
    "eq_highpass": 1.0,
    "rumble": 0.0,
    "rumble_db": (-30.0, -6.0),
}


@dataclass(frozen=True)
class SynthOptions:
    """Knobs of the synthetic corpus (defaults: the documented default dataset).

    Attributes:
        mode: ``"min"`` (cut to the shortest source, LibriMix default) or ``"max"`` (zero-pad).
        speech_lufs: loudness range of each speaker (LibriMix: −33 … −25 LUFS).
        noise_lufs: loudness range of the noise (LibriMix: −38 … −30 LUFS).
        max_peak: joint peak limit of all signals and the mixture (LibriMix: 0.9).
        utterance_s: range of the targeted speech duration of one utterance, seconds.
        speakers: speakers per pool, in the order (train, dev, test, babble). Pools are disjoint.
        english_fraction: share of speakers whose base voice is an English accent; the others
            use another eSpeak language and mostly read text in that language.
        klatt_fraction: share of speakers on eSpeak's Klatt synthesiser instead of the default.
        room_tone_db: range (dB relative to the speech RMS) of a low coloured noise floor under
            each utterance, so speech never sits in exact digital silence; None disables it.
        eq_db: largest gain (±dB) of the random per-utterance shelving/peaking EQ; 0 disables.
        eq_highpass: probability that the random EQ includes its gentle 40–130 Hz high-pass;
            below 1, the other utterances keep their lowest frequencies.
        rumble: probability that an utterance's recording carries low-frequency rumble, mains
            hum and offset steps (:func:`usgm.data.synth.dsp.recording_rumble`), part of the
            source as in real recordings (three of the seven real-speech dev voices hold 3–24 %
            of their energy below 60 Hz, mostly offsets below 5 Hz); 0 disables.
        rumble_db: level range of that rumble, dB relative to the speech's active RMS.
        breath_fraction: share of speakers with eSpeak breath noise (breathy voices).
        word_gap: largest extra pause between words (eSpeak WORDGAP, 10 ms units), drawn per
            utterance from 0 … word_gap.
        drift: largest relative deviation of a smooth random time warp of each utterance (pitch,
            formants and tempo drift together, like natural prosody and F0 wander); 0 disables.
        jitter: relative size of fast random F0/period perturbation (jitter) added to the warp;
            0 disables.
        shimmer_db: size (dB) of fast random amplitude perturbation (shimmer); 0 disables.
        level_db: largest slow level change (± dB) within an utterance; 0 disables.
        band_limit: probability of a random band limit per utterance (high-pass 80–350 Hz,
            low-pass 2.6–3.9 kHz: telephone/microphone bandwidths).
        reverb: probability of reverberating an utterance with a synthetic room response.
        reverb_rt60: range of the reverberation time (s) of those rooms.
        noise_kinds: noise types, one drawn uniformly per mixture (repeat a kind to weight it):
            ``cafe`` (babble + background + transients), ``speech_shaped``, ``machinery``,
            ``traffic``.
        babble_bank: distant-talker recordings synthesised per shard for the babble noise.
        babble_talkers: (min, max) simultaneous talkers in one babble noise.
        recorded_fraction: share of sources drawn from recorded human speakers instead of eSpeak
            (in the splits of ``recorded_splits``; see :mod:`usgm.data.synth.recorded`). Needs
            Debian's voice packages (fetched on demand); 0 gives eSpeak-only data. Default 1:
            recorded voices transferred best to real speech (docs/default-data.md).
        recorded_splits: splits that use recorded speakers, each from its own disjoint pool of
            people (145 train, 4 dev, 4 test).
        recorded_speed: range of the per-utterance speed factor of recorded speech (resampling:
            F0 and formants move together, like a different vocal tract).
        recorded_gap: range of the pause between two joined clips of one recorded utterance,
            seconds; shorter pauses make the sources overlap more, as in read speech.
        same_recording: probability that the further recorded people of a mixture come from the
            first one's recording source (one game dub or voice-pack set, see
            ``voicepacks.RECORDING_GROUPS``): the sources then share their recording chain and
            only the voices tell them apart, as in real corpora recorded in one studio.
        shared_channel: probability that all recorded sources of a mixture get the same draw
            of the level/room/EQ/band/room-tone/codec chain, so that no per-source channel
            difference can stand in for the voice.
        self_pair: probability that the further recorded sources of a mixture are its first
            recorded person again (other clips, speed factors at least ``SELF_PAIR_RATIO`` apart
            where ``recorded_speed`` allows, one channel draw): pairs that only pitch and
            formants tell apart, with nothing in the recording chain to go by.
        colour_match: probability that each further recorded source of a mixture is the one,
            of ``colour_candidates`` rendered people (each with its own speed and chain draw),
            whose long-term spectrum is closest to the first recorded source's
            (``dsp.spectrum_distance``): pairs as alike in colour as voices recorded in one
            studio, so that a model must tell them apart by what changes over time.
        colour_candidates: how many people ``colour_match`` renders to choose from (2–16;
            generation time grows with it).
        codec: probability of passing an utterance through a lossy speech codec at 8 kHz
            (GSM 6.10, G.721, µ-law, IMA ADPCM, low-bitrate MP3/Opus; recorded prompt sets and
            telephone speech carry such artifacts); 0 disables.
        codecs: the codecs drawn from (keys of ``usgm.data.synth.dsp.CODECS``). MP3 and Opus
            output depends on the encoder versions in libsndfile (pinned by the soundfile wheel).
        shard_size: mixtures per worker process. Part of the output's identity: the same seed
            and shard size give the same files whatever the number of workers.
    """

    mode: str = "min"
    speech_lufs: tuple[float, float] = (-33.0, -25.0)
    noise_lufs: tuple[float, float] = (-38.0, -30.0)
    max_peak: float = 0.9
    utterance_s: tuple[float, float] = (3.0, 6.0)
    speakers: tuple[int, int, int, int] = (200, 40, 40, 60)
    english_fraction: float = 0.7
    klatt_fraction: float = 0.3
    room_tone_db: tuple[float, float] | None = (-55.0, -35.0)
    eq_db: float = 6.0
    eq_highpass: float = 0.5
    breath_fraction: float = 0.5
    word_gap: int = 3
    drift: float = 0.06
    jitter: float = 0.01
    shimmer_db: float = 1.0
    level_db: float = 4.0
    band_limit: float = 0.3
    reverb: float = 0.3
    reverb_rt60: tuple[float, float] = (0.15, 0.6)
    noise_kinds: tuple[str, ...] = ("cafe", "cafe", "speech_shaped", "machinery", "traffic")
    babble_bank: int = 24
    babble_talkers: tuple[int, int] = (3, 7)
    recorded_fraction: float = 1.0
    recorded_splits: tuple[str, ...] = ("train", "dev", "test")
    recorded_speed: tuple[float, float] = (0.85, 1.2)
    recorded_gap: tuple[float, float] = (0.05, 0.4)
    same_recording: float = 0.0
    shared_channel: float = 0.0
    self_pair: float = 0.0
    colour_match: float = 0.0
    colour_candidates: int = 4
    rumble: float = 0.5
    rumble_db: tuple[float, float] = (-30.0, -6.0)
    codec: float = 0.5
    codecs: tuple[str, ...] = ("gsm", "g721", "ulaw", "adpcm", "mp3", "opus")
    shard_size: int = 100

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> DataError:
            return DataError(f"synth option {key!r}: {why}")

        if self.mode not in ("min", "max"):
            raise bad("mode", f"must be 'min' or 'max', got {self.mode!r}")
        for key in ("speech_lufs", "noise_lufs", "utterance_s"):
            lo, hi = getattr(self, key)
            if not lo <= hi:
                raise bad(key, f"needs low <= high, got {(lo, hi)}")
        if self.utterance_s[0] <= 0.5:
            raise bad("utterance_s", "utterances must be longer than 0.5 s")
        if not 0 < self.max_peak < 1:
            raise bad("max_peak", f"must be in (0, 1), got {self.max_peak}")
        if len(self.speakers) != 4 or min(self.speakers) < 1 or max(self.speakers) > 9999:
            raise bad("speakers", f"needs 4 pool sizes in 1..9999, got {self.speakers}")
        if self.speakers[3] < 5:
            raise bad("speakers", "the babble pool needs at least 5 speakers")
        for key in (
            "english_fraction",
            "klatt_fraction",
            "breath_fraction",
            "band_limit",
            "reverb",
            "recorded_fraction",
            "codec",
            "same_recording",
            "shared_channel",
            "self_pair",
            "colour_match",
            "eq_highpass",
            "rumble",
        ):
            if not 0 <= getattr(self, key) <= 1:
                raise bad(key, "must be in [0, 1]")
        if not 2 <= self.colour_candidates <= 16:
            raise bad("colour_candidates", f"must be in 2..16, got {self.colour_candidates}")
        if not -60 <= self.rumble_db[0] <= self.rumble_db[1] <= 10:
            raise bad("rumble_db", "needs -60 <= low <= high <= 10 dB")
        if not 0 <= self.word_gap <= 50:
            raise bad("word_gap", "must be in 0..50")
        for key in ("drift", "jitter"):
            if not 0 <= getattr(self, key) < 0.5:
                raise bad(key, "must be in [0, 0.5)")
        for key in ("shimmer_db", "level_db"):
            if not 0 <= getattr(self, key) <= 20:
                raise bad(key, "must be in [0, 20] dB")
        if not 0 < self.reverb_rt60[0] <= self.reverb_rt60[1] <= 3:
            raise bad("reverb_rt60", "needs 0 < low <= high <= 3 s")
        unknown = set(self.noise_kinds) - set(NOISE_KINDS)
        if not self.noise_kinds or unknown:
            raise bad("noise_kinds", f"needs one or more of {', '.join(NOISE_KINDS)}")
        if self.babble_bank < 1 or not 1 <= self.babble_talkers[0] <= self.babble_talkers[1]:
            raise bad("babble_talkers", "needs 1 <= min <= max and babble_bank >= 1")
        if set(self.recorded_splits) - set(SPLITS):
            raise bad("recorded_splits", f"needs a subset of {', '.join(SPLITS)}")
        if not 0.5 <= self.recorded_speed[0] <= self.recorded_speed[1] <= 2:
            raise bad("recorded_speed", "needs 0.5 <= low <= high <= 2")
        if not 0 <= self.recorded_gap[0] <= self.recorded_gap[1] <= 2:
            raise bad("recorded_gap", "needs 0 <= low <= high <= 2 s")
        from usgm.data.synth.dsp import CODECS

        if not self.codecs or set(self.codecs) - set(CODECS):
            raise bad("codecs", f"needs one or more of {', '.join(CODECS)}")
        if self.codec > 0:
            import soundfile as sf

            missing = [c for c in self.codecs if not sf.check_format(*CODECS[c][:2])]
            if missing:
                raise bad("codecs", f"this libsndfile cannot write {', '.join(missing)}")
        if self.shard_size < 1:
            raise bad("shard_size", "must be >= 1")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SynthOptions:
        """Build options from keyword arguments, naming any unknown key in a DataError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise DataError(
                f"unknown synth option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        # JSON round trips turn tuples into lists: normalise back.
        fixed = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in kwargs.items()}
        return cls(**fixed)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)
