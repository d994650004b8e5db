"""Offline default corpus: synthetic speakers (eSpeak NG) and café-like noise, LibriMix layout.

Public API::

    ensure_corpus(root, n_src, sample_rate, generate) -> Path
                                       # the one entry for training: generate when missing or
                                       # stale, reuse otherwise (staleness rules live here)
    make_dataset(out, n_src=2, n_train=800, n_dev=200, n_test=200, seed=0, sample_rate=8000,
                 num_workers=None, *, overwrite=False, verbose=False, **options) -> Path
    is_complete(root) -> bool          # True once the build finished (``root/DONE`` written)
    read_info(root) -> dict | None     # the build parameters recorded in ``root/DONE``
    SynthOptions                       # the ``**options`` fields (mode, loudness ranges, …)

Console script: ``usgm-make-data`` (:func:`usgm.data.synth.cli.main`).
"""

from usgm.data.synth.corpus import ensure_corpus
from usgm.data.synth.options import SynthOptions
from usgm.data.synth.writer import COMPLETE_MARKER, is_complete, make_dataset, read_info

__all__ = [
    "COMPLETE_MARKER",
    "SynthOptions",
    "ensure_corpus",
    "is_complete",
    "make_dataset",
    "read_info",
]
