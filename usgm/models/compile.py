"""Process-wide ``torch.compile`` settings that the separators need.

Shared by training (:class:`usgm.training.module.SeparationModule` with
``model.compile_dynamic``) and separation (:func:`usgm.evaluation.separate.compile_forward` with
``dynamic=True``).
"""

from __future__ import annotations


def allow_symbolic_sizes() -> None:
    """Prepares Inductor for graphs with symbolic (dynamic) batch and time sizes.

    Inductor's coalescing analysis for Triton tiling does not handle symbolic sizes (its config
    says so) and asserts in ``get_pw_red_splits`` on the SE mask net with dynamic shapes (seen on
    an H200, torch 2.11). It is switched off for the process, since Inductor reads the flag at
    compile time, whenever that happens. CPU code is unaffected.
    """
    import torch._inductor.config as inductor_config

    inductor_config.triton.coalesce_tiling_analysis = False
