"""Gradient modulation (GM) of Hu et al. (2023, arXiv 2302.11131), Sec. 2.3: the projection.

For every parameter tensor shared by the two tasks (encoder and SE module), with g_SE the
gradient of the SE loss and g_SS that of the separation loss:

    if ⟨g_SE, g_SS⟩ < 0:  g_SE ← g_SE − ⟨g_SE, g_SS⟩ / ‖g_SS‖² · g_SS   (onto g_SS's normal plane)
    g = g_SS + g_SE

so the SE gradient never opposes the separation objective. The projection is per tensor, not
global, and it is not linear: under data parallelism, all-reduce both gradients first.

:func:`modulate` works on any two-task model (lists of per-tensor gradients, None where a task
does not reach a tensor). The fast path lays all tensors out in one (rows, 1024) buffer, each
tensor zero-padded to whole rows, so the per-tensor dot products are a dense row reduction plus a
small gather: a handful of kernels whatever the number of tensors, no host synchronisation, and
deterministic. :func:`_modulate_reference` is the readable per-tensor definition it is tested
against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

Grads = Sequence[Tensor | None]

_ROW = 1024  # elements per row of the flat layout


# -- reference -----------------------------------------------------------------------------------
def _modulate_one(g_se: Tensor | None, g_ss: Tensor | None) -> Tensor | None:
    """Reference GM for one tensor (float32 arithmetic, result in the SS gradient's dtype)."""
    if g_se is None:
        return g_ss
    if g_ss is None:
        return g_se  # the SS gradient is zero: nothing to conflict with
    a, b = g_se.float(), g_ss.float()
    dot = torch.sum(a * b)
    ss_sq = torch.sum(b * b)
    if dot < 0 and ss_sq > 0:
        a = a - dot / ss_sq * b
    return (b + a).to(g_ss.dtype)


def _modulate_reference(se_grads: Grads, ss_grads: Grads) -> list[Tensor | None]:
    """Per-tensor loop implementing the GM rule exactly as written in the paper."""
    _check_lists(se_grads, ss_grads)
    return [_modulate_one(a, b) for a, b in zip(se_grads, ss_grads)]


# -- fast path -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    """How a list of tensors (by numel) is laid out in rows of ``_ROW`` elements."""

    rows: tuple[int, ...]  # rows per tensor (≥ 1)
    split_sizes: tuple[int, ...]  # flat pieces: data_0, [pad_0], data_1, [pad_1], ...
    data_piece: tuple[int, ...]  # index of each tensor's data in the split list
    pads: tuple[Tensor | None, ...]  # zero padding per tensor (views of one buffer)
    row_owner: Tensor  # (n_rows,) int64: tensor index of each row
    row_table: Tensor  # (n, max_rows) int64: rows of each tensor, n_rows (a zero) as filler


@lru_cache(maxsize=32)
def _layout(numels: tuple[int, ...], device: torch.device) -> _Layout:
    """Build (and cache: parameter lists repeat every step) the row layout for ``numels``."""
    rows = tuple(max(1, -(-n // _ROW)) for n in numels)
    zeros = torch.zeros(_ROW, device=device)
    sizes: list[int] = []
    data_piece: list[int] = []
    pads: list[Tensor | None] = []
    for n, r in zip(numels, rows):
        data_piece.append(len(sizes))
        sizes.append(n)
        pad = r * _ROW - n
        pads.append(zeros[:pad] if pad else None)
        if pad:
            sizes.append(pad)
    n_rows, max_rows = sum(rows), max(rows)
    owner = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor(rows))
    table = torch.full((len(rows), max_rows), n_rows, dtype=torch.long)
    start = 0
    for i, r in enumerate(rows):
        table[i, :r] = torch.arange(start, start + r)
        start += r
    return _Layout(
        rows, tuple(sizes), tuple(data_piece), tuple(pads), owner.to(device), table.to(device)
    )


def _rows(tensors: list[Tensor], layout: _Layout) -> Tensor:
    """Flatten and concatenate ``tensors`` with their padding: (n_rows, _ROW) float32."""
    pieces: list[Tensor] = []
    for t, pad in zip(tensors, layout.pads):
        pieces.append(t.reshape(-1) if t.dtype == torch.float32 else t.reshape(-1).float())
        if pad is not None:
            pieces.append(pad)
    return torch.cat(pieces).view(-1, _ROW)


def _per_tensor(row_sums: Tensor, layout: _Layout) -> Tensor:
    """Sum row results per tensor: (n_rows,) → (n,) by a gather (deterministic, no atomics)."""
    padded = torch.cat((row_sums, row_sums.new_zeros(1)))
    return padded[layout.row_table].sum(dim=1)


# -- public API ----------------------------------------------------------------------------------
def _check_lists(se_grads: Grads, ss_grads: Grads) -> None:
    if len(se_grads) != len(ss_grads):
        raise ValueError(
            f"GM needs one SE and one SS gradient per tensor, got {len(se_grads)} and "
            f"{len(ss_grads)}"
        )
    for i, (a, b) in enumerate(zip(se_grads, ss_grads)):
        if a is not None and b is not None and a.shape != b.shape:
            raise ValueError(
                f"GM gradient {i}: SE shape {tuple(a.shape)} != SS shape {tuple(b.shape)}"
            )


def _modulate(
    se_grads: Grads, ss_grads: Grads, groups: Sequence[str] | None, want_stats: bool
) -> tuple[list[Tensor | None], dict[str, Tensor]]:
    """Shared implementation of :func:`modulate` and :func:`gm_stats`."""
    _check_lists(se_grads, ss_grads)
    if groups is not None and len(groups) != len(se_grads):
        raise ValueError(f"GM groups has {len(groups)} labels for {len(se_grads)} tensors")
    # Unpaired entries pass through unchanged; paired ones are filled in below.
    out: list[Tensor | None] = [b if a is None else a for a, b in zip(se_grads, ss_grads)]
    idx = [i for i, (a, b) in enumerate(zip(se_grads, ss_grads)) if a is not None and b is not None]
    if not idx:
        return out, _summarise(None, None, None, idx, groups) if want_stats else {}
    se = [se_grads[i] for i in idx]
    ss = [ss_grads[i] for i in idx]
    device = ss[0].device
    if any(t.device != device for t in (*se, *ss)):  # spread over devices: per-tensor path
        for i in idx:
            out[i] = _modulate_one(se_grads[i], ss_grads[i])
        if not want_stats:
            return out, {}
        dots = [(a.float() * b.float()).sum().to(device) for a, b in zip(se, ss)]
        se_sqs = [a.float().square().sum().to(device) for a in se]
        ss_sqs = [b.float().square().sum().to(device) for b in ss]
        return out, _summarise(
            torch.stack(dots), torch.stack(se_sqs), torch.stack(ss_sqs), idx, groups
        )

    layout = _layout(tuple(t.numel() for t in se), device)
    a, b = _rows(se, layout), _rows(ss, layout)  # (n_rows, _ROW) float32
    dot = _per_tensor(torch.linalg.vecdot(a, b), layout)  # (n,)
    ss_sq = _per_tensor(torch.linalg.vecdot(b, b), layout)
    # coefficient ⟨a,b⟩/‖b‖² where in conflict, else 0 (‖b‖² = 0 implies ⟨a,b⟩ = 0)
    conflict = (dot < 0) & (ss_sq > 0)
    coef = torch.where(conflict, dot / ss_sq.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    # b + (a − coef·b) = a + (1 − coef)·b, coefficient broadcast per row
    flat = torch.addcmul(a, b, (1.0 - coef).index_select(0, layout.row_owner).unsqueeze(1))
    pieces = flat.view(-1).split(layout.split_sizes)
    for i, k, g in zip(idx, layout.data_piece, ss):
        piece = pieces[k].view(g.shape)
        out[i] = piece if g.dtype == torch.float32 else piece.to(g.dtype)
    if not want_stats:
        return out, {}
    se_sq = _per_tensor(torch.linalg.vecdot(a, a), layout)
    return out, _summarise(dot, se_sq, ss_sq, idx, groups)


def modulate(se_grads: Grads, ss_grads: Grads) -> list[Tensor | None]:
    """Combine two tasks' gradients with gradient modulation (Hu et al. 2023, Sec. 2.3).

    Per tensor, with a = g_SE and b = g_SS: if ⟨a, b⟩ < 0, a ← a − ⟨a, b⟩/‖b‖² · b; the result
    is b + a. Equivalent per-tensor code (:func:`_modulate_reference`, which the fast path is
    tested against)::

        dot, ss_sq = (a * b).sum(), (b * b).sum()
        if dot < 0 and ss_sq > 0:
            a = a - dot / ss_sq * b
        combined = b + a

    Args:
        se_grads: Per-tensor gradients of the SE loss; None where the SE loss does not reach the
            tensor (e.g. SS mask net and decoder).
        ss_grads: Per-tensor gradients of the SS loss (None where unused), same length; shapes
            must match where both exist.

    Returns:
        Combined gradient per tensor: g_SS + modulated g_SE where both exist; the one that exists
        otherwise (the same tensor object, not a copy); None where neither does. Computed in
        float32 and returned in the SS gradient's dtype; on the fast path (all paired tensors on
        one device) the results are views into one fresh buffer, never aliasing the inputs.

    Raises:
        ValueError: Lists of different lengths or mismatched shapes (the message gives the index).
    """
    return _modulate(se_grads, ss_grads, None, want_stats=False)[0]


def modulate_and_stats(
    se_grads: Grads, ss_grads: Grads, groups: Sequence[str] | None = None
) -> tuple[list[Tensor | None], dict[str, Tensor]]:
    """:func:`modulate` and :func:`gm_stats` in one pass (shared per-tensor reductions)."""
    return _modulate(se_grads, ss_grads, groups, want_stats=True)


def gm_stats(
    se_grads: Grads, ss_grads: Grads, groups: Sequence[str] | None = None
) -> dict[str, Tensor]:
    """Conflict telemetry between the two tasks' gradients (computed before any projection).

    Only tensors where both gradients exist count.

    Args:
        se_grads: Per-tensor SE-loss gradients (None where absent).
        ss_grads: Per-tensor SS-loss gradients.
        groups: Optional label per tensor (e.g. ``"encoder"``, ``"se_masknet"``); adds
            ``"<label>/conflict_frac"`` and ``"<label>/cos_mean"`` per label.

    Returns:
        0-d float32 tensors on the gradients' device (no host sync): ``conflict_frac`` (fraction
        of tensors with ⟨g_SE, g_SS⟩ < 0), ``cos_mean`` (mean cosine similarity, 0 for a zero
        gradient), ``n_pairs`` (tensors compared), plus the per-group entries.
    """
    return _modulate(se_grads, ss_grads, groups, want_stats=True)[1]


def _summarise(
    dot: Tensor | None,
    se_sq: Tensor | None,
    ss_sq: Tensor | None,
    idx: list[int],
    groups: Sequence[str] | None,
) -> dict[str, Tensor]:
    """Reduce per-tensor dot products and squared norms (n,) to the telemetry dict."""
    if dot is None or se_sq is None or ss_sq is None:
        zero = torch.zeros(())
        return {"conflict_frac": zero, "cos_mean": zero, "n_pairs": zero}
    device = dot.device
    cos = dot / (se_sq.sqrt() * ss_sq.sqrt()).clamp_min(torch.finfo(torch.float32).tiny)
    conflict = (dot < 0).float()
    stats = {
        "conflict_frac": conflict.mean(),
        "cos_mean": cos.mean(),
        "n_pairs": torch.full((), float(len(idx)), device=device),  # a fill: no host copy
    }
    if groups is not None:
        labels = [groups[i] for i in idx]
        for label in dict.fromkeys(labels):
            sel = _index(tuple(j for j, lab in enumerate(labels) if lab == label), device)
            stats[f"{label}/conflict_frac"] = conflict.index_select(0, sel).mean()
            stats[f"{label}/cos_mean"] = cos.index_select(0, sel).mean()
    return stats


@lru_cache(maxsize=64)
def _index(values: tuple[int, ...], device: torch.device) -> Tensor:
    """Cached int64 index tensor on ``device`` (no blocking host→device copy per step)."""
    return torch.tensor(values, dtype=torch.long, device=device)
