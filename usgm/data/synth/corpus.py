"""The generator's one entry for the rest of usgm: make sure a current corpus is at a root.

:func:`ensure_corpus` generates the default corpus when it is missing, regenerates it in place
when usgm generated it with other settings (stale), and leaves it alone otherwise. Training calls
only this; what "stale" means (option history, the voice catalogue, the eSpeak-only fallback)
stays inside :mod:`usgm.data.synth`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from usgm.data.synth import recorded as rec
from usgm.data.synth.options import ADDED_LATER, DEFAULT_COUNTS, DEFAULT_SEED, SynthOptions
from usgm.data.synth.writer import is_complete, make_dataset, read_info

# Keys of ``generate`` that say where things are or how to build, not what the corpus holds:
# changing them never makes a corpus stale.
_NOT_CONTENT = ("num_workers", "recorded_dir", "cache_dir", "require_recorded")


def _say(msg: str) -> None:
    print(f"[usgm] {msg}", file=sys.stderr, flush=True)


def _plain(value: Any) -> Any:
    """Tuples → lists, as in the JSON of ``DONE``."""
    return json.loads(json.dumps(value))


def _requested(generate: Mapping[str, Any]) -> tuple[dict[str, int], int, dict[str, Any]]:
    """``(counts per LibriMix split folder, seed, SynthOptions as JSON)`` of a ``generate`` map."""
    gen = dict(generate)
    counts = {
        "train-360": gen.pop("n_train", DEFAULT_COUNTS["n_train"]),
        "dev": gen.pop("n_dev", DEFAULT_COUNTS["n_dev"]),
        "test": gen.pop("n_test", DEFAULT_COUNTS["n_test"]),
    }
    seed = gen.pop("seed", DEFAULT_SEED)
    for key in _NOT_CONTENT:
        gen.pop(key, None)
    return counts, seed, _plain(SynthOptions.from_kwargs(**gen).to_dict())


def _fallback_still_holds(fallback: Mapping[str, Any], sample_rate: int, cache: Any) -> bool:
    """Whether a corpus built without recorded voices (``fallback``) would be built so again.

    Checked without downloading anything, so that a machine without the voices does not rebuild
    its corpus on every run: the voices count as available once they are on this machine
    (:func:`recorded.available_offline`), or, where ``apt-get`` was missing, once it is there.
    After a failed download the corpus is kept until the voices are on the machine (a retry on
    every run would cost each run the download's failure; ``usgm-make-data --overwrite`` retries).
    """
    if rec.available_offline(sample_rate, cache):
        return False
    if str(fallback.get("reason", "")).startswith("apt-get not found"):
        import shutil

        return shutil.which("apt-get") is None
    return True


def corpus_is_current(
    info: Mapping[str, Any] | None, n_src: int, sample_rate: int, generate: Mapping[str, Any]
) -> bool:
    """Was the corpus whose ``DONE`` reads ``info`` built with the settings now requested?

    Args:
        info: :func:`read_info` of the corpus (None: no finished corpus).
        n_src: speakers per mixture requested.
        sample_rate: sample rate requested.
        generate: ``make_dataset`` keyword arguments requested (counts, seed, options, and
            the locations ``recorded_dir``, ``cache_dir``, ``num_workers``, which do not count).

    Returns:
        True when the corpus can be used as it is. A corpus is stale when counts, seed, size or
        any option differ (an option missing from an older ``DONE`` counts as its
        :data:`options.ADDED_LATER` value), when it holds recorded voices of another voice
        catalogue, or when it was built eSpeak-only for want of recorded voices that this
        machine can now have (see :func:`_fallback_still_holds`).
    """
    if not info:
        return False
    counts, seed, options = _requested(generate)
    # A corpus written before an option existed was built with that option's neutral value.
    built = _plain({**ADDED_LATER, **(info.get("options") or {})})
    if (
        info.get("n_src") != n_src
        or info.get("sample_rate") != sample_rate
        or info.get("counts") != counts
        or info.get("seed") != seed
    ):
        return False
    if info.get("recorded_speakers") and info.get("recorded_catalogue") != rec.catalogue_key():
        return False
    fallback = info.get("recorded_fallback")
    if built == options:  # also a fallback corpus asked for as eSpeak-only data
        return True
    # A fallback corpus stands for the recorded one it replaced, while the fallback would
    # happen again; never where recorded voices are asked for explicitly.
    return (
        bool(fallback)
        and generate.get("recorded_dir") is None
        and not generate.get("require_recorded")
        and options["recorded_fraction"] == fallback.get("requested_fraction")
        and built == {**options, "recorded_fraction": 0.0}
        and _fallback_still_holds(fallback, sample_rate, generate.get("cache_dir"))
    )


def ensure_corpus(
    root: str | os.PathLike[str],
    n_src: int,
    sample_rate: int,
    generate: Mapping[str, Any],
    *,
    say: Callable[[str], None] = _say,
) -> Path:
    """Generate the default corpus at ``root`` when it is missing or stale; return the root.

    A corpus usgm generated earlier with other settings is regenerated in place; a folder that
    usgm did not generate is never touched (DataError). Where recorded voices are requested
    from Debian's packages but ``apt-get`` is missing or its download fails, the corpus is
    built eSpeak-only (one line says so, see :func:`make_dataset`); that corpus is reused on
    later runs while the voices stay out of reach, and rebuilt once they are on the machine
    (or ``apt-get`` appeared where it was missing). ``recorded_dir`` or ``require_recorded``
    in ``generate`` make recorded voices a requirement: then a missing voice source fails.

    Args:
        root: dataset root (the folder that holds ``wav8k/`` or ``wav16k/``).
        n_src: speakers per mixture, 2 or 3.
        sample_rate: 8000 or 16000.
        generate: plain keyword arguments of :func:`make_dataset`: ``n_train``, ``n_dev``,
            ``n_test``, ``seed``, ``num_workers``, ``recorded_dir``, ``cache_dir``,
            ``require_recorded`` and any :class:`SynthOptions` field.
        say: where the one-line notices go (default: stderr, prefixed ``[usgm]``).

    Returns:
        The dataset root (absolute).

    Raises:
        DataError: bad settings, a non-usgm folder at ``root``, or required recorded voices
            that cannot be had.
    """
    root = Path(root).expanduser().absolute()
    overwrite = False
    if is_complete(root):
        info = read_info(root)
        if corpus_is_current(info, n_src, sample_rate, generate):
            if info and info.get("recorded_fallback"):
                _say_fallback_reused(say, root, info["recorded_fallback"])
            return root
        say(f"{root} was generated with other settings: rebuilding it.")
        overwrite = True
    else:
        say(
            f"generating the default dataset into {root} (one-time; 2-3 minutes on 2 cores with "
            "the default options, plus a one-time download of recorded voices where needed) ..."
        )
    return make_dataset(
        root, n_src=n_src, sample_rate=sample_rate, overwrite=overwrite, **dict(generate)
    )


def _say_fallback_reused(say: Callable[[str], None], root: Path, fallback: Mapping) -> None:
    say(
        f"{root} holds eSpeak-only data (recorded voices were unavailable: "
        f"{fallback.get('reason')}); expect a lower real-speech score, see docs/default-data.md"
    )
