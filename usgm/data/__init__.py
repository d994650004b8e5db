"""Data: the LibriMix layout, the offline default corpus generator and LibriMix mixing rules.

Submodules are imported on demand (``usgm.data.mixing``, ``usgm.data.synth``, ``usgm.data.librimix``
…); this package itself imports nothing heavy.
"""
