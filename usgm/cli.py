"""Console scripts (thin wrappers; the work lives in the subpackages).

The generated entry points call ``sys.exit(<function>())``, so each returns an exit code.
"""

from __future__ import annotations


def make_data(argv: list[str] | None = None) -> int:
    """`usgm-make-data`: generate the offline default corpus in the LibriMix layout."""
    from usgm.data.synth.cli import main

    return main(argv)


def separate(argv: list[str] | None = None) -> int:
    """`usgm-separate`: separate recordings of any length with a trained model."""
    from usgm.evaluation.separate import main

    return main(argv)


def export(argv: list[str] | None = None) -> int:
    """`usgm-export`: write a weights-only model file from a training checkpoint."""
    from usgm.evaluation.export import main

    return main(argv)


def compare(argv: list[str] | None = None) -> int:
    """`usgm-compare`: compare runs by method (table, paired differences, curves) from local files."""
    from usgm.evaluation.compare import main

    return main(argv)
