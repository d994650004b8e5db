"""Evaluation: metrics (SI-SNR, BSS-eval SDR, PESQ/STOI), reports, the evaluate loop, windowed
separation of any recording (``usgm-separate``) and shareable model files (``usgm-export``).

Submodules are imported on demand; this package itself imports nothing heavy.
"""
