"""The evaluation loop behind ``evaluate.py``: separate a whole split, score every utterance, and
write the report (CSV, JSON, examples, plots, printed table, logger output).

Utterances are sorted by length and batched with neighbours whose length differs by at most
``max_pad_ratio`` (default 0: equal lengths only, so the results are exactly those of one-by-one
evaluation; the network's global norm, attention and chunk layout all see zero padding) and up to
``max_batch_seconds`` of audio; each utterance is scored on its own unpadded samples. Utterances longer than ``long_threshold_s`` — and
any batch that runs out of GPU memory — are separated one by one, falling back to the overlapping
windows of :mod:`usgm.evaluation.separate` for the longest ones.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from usgm.data.errors import DataError, SourceCountError
from usgm.evaluation import report
from usgm.evaluation.metrics import utterance_metrics
from usgm.evaluation.separate import separate_in_windows


class EvaluationError(RuntimeError):
    """The evaluation cannot give valid numbers (e.g. the model outputs NaN); names the utterance."""


@dataclass
class EvalOptions:
    """Evaluation settings (``eval.*`` in ``conf/eval.yaml``).

    Attributes:
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` …
        batch_size: most utterances per forward pass (1 = the paper's protocol, no padding).
        max_pad_ratio: batch utterances only when the shortest is at least (1 − ratio) × the
            longest. 0 batches equal lengths only (exact); the network sees any zero padding
            (global norm, attention, chunk layout), so a ratio > 0 trades exactness for speed.
        max_batch_seconds: most audio (batch × longest) per forward pass, in seconds.
        long_threshold_s: longer utterances are separated in overlapping windows.
        window_s, overlap_s: window and overlap of that windowed separation.
        pesq: also compute PESQ and STOI (needs the ``usgm[eval]`` extra).
        n_examples: example folders written (spread evenly over the split).
        progress: show a tqdm progress bar.
    """

    device: str = "auto"
    batch_size: int = 8
    max_pad_ratio: float = 0.0
    max_batch_seconds: float = 240.0
    long_threshold_s: float = 60.0
    window_s: float = 30.0
    overlap_s: float = 3.0
    pesq: bool = False
    n_examples: int = 3
    progress: bool = True

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> EvalOptions:
        """Builds options from a mapping, naming any unknown key."""
        cfg = dict(cfg or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} under eval; expected {sorted(known)}")
        return cls(**cfg)


@dataclass
class EvalResult:
    """What :func:`evaluate` returns.

    Attributes:
        rows: per-utterance metrics in dataset order (``mixture_ID`` + columns).
        stats: per-column mean / std / 95 % CI / n.
        summary: the content of ``final_metrics.json``.
        out_dir: the results folder.
    """

    rows: list[dict[str, Any]]
    stats: dict[str, dict]
    summary: dict[str, Any]
    out_dir: Path
    files: list[Path] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"eval.device={name!r} but CUDA is not available")
    return dev


def length_batches(
    lengths: Sequence[int], batch_size: int, max_pad_ratio: float, max_batch_samples: int
) -> list[list[int]]:
    """Groups dataset indices into batches of similar length (sorted, longest first).

    A batch grows while it has fewer than ``batch_size`` items, its shortest item is at least
    (1 − ``max_pad_ratio``) × its longest, and batch × longest ≤ ``max_batch_samples``.

    Returns:
        Lists of indices; every index appears exactly once.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur:
            longest = lengths[cur[0]]
            fits = (
                len(cur) < batch_size
                and lengths[i] >= (1.0 - max_pad_ratio) * longest
                and (len(cur) + 1) * longest <= max_batch_samples
            )
            if not fits:
                batches.append(cur)
                cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class Separator:
    """Runs the model on a batch, degrading gracefully for long inputs or when memory runs out.

    Args:
        model: a :class:`usgm.models.UnifiedSeparator` (or anything returning ``.est``).
        device: where to run it.
        sample_rate: audio rate, for the length thresholds.
        opts: thresholds and windowing.
    """

    def __init__(self, model: nn.Module, device: torch.device, sample_rate: int, opts: EvalOptions):
        self.model = model.to(device).eval()
        self.device = device
        self.long = round(opts.long_threshold_s * sample_rate)
        self.window = round(opts.window_s * sample_rate)
        self.overlap = round(opts.overlap_s * sample_rate)
        self.n_windowed = 0

    @torch.inference_mode()
    def _forward(self, mix: Tensor) -> Tensor:
        return self.model(mix.to(self.device, torch.float32)).est.float()

    def _one(self, mix: Tensor) -> Tensor:
        """(T,) → (C, T), whole when short enough and memory allows, else windowed."""
        if mix.shape[-1] <= self.long:
            try:
                return self._forward(mix[None])[0]
            except (RuntimeError, torch.OutOfMemoryError) as err:
                if not _is_oom(err):
                    raise
                torch.cuda.empty_cache()
        self.n_windowed += 1
        fn = lambda x: self._forward(x[None])[0]  # noqa: E731
        return separate_in_windows(fn, mix.to(self.device), self.window, self.overlap)

    def __call__(self, mix: Tensor, lengths: Tensor) -> list[Tensor]:
        """Separates a padded batch.

        Args:
            mix: (B, T) right-padded mixtures.
            lengths: (B,) valid samples.

        Returns:
            B tensors (C, T_b) on the device, each cut to its valid length.
        """
        lens = [int(n) for n in lengths]
        if len(lens) > 1 and max(lens) <= self.long:
            try:
                est = self._forward(mix[:, : max(lens)])
                return [est[b, :, :n] for b, n in enumerate(lens)]
            except (RuntimeError, torch.OutOfMemoryError) as err:
                if not _is_oom(err):
                    raise
                torch.cuda.empty_cache()
        return [self._one(mix[b, :n]) for b, n in enumerate(lens)]


def example_indices(n: int, k: int) -> set[int]:
    """``k`` dataset indices spread evenly over ``n`` (first and last included)."""
    if k <= 0 or n == 0:
        return set()
    return {int(x) for x in np.rint(np.linspace(0, n - 1, min(k, n)))}


def evaluate(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    n_batches: int | None,
    n_utterances: int,
    sample_rate: int,
    out_dir: str | Path,
    opts: EvalOptions,
    example_ids: set[str] | None = None,
    info: Mapping[str, Any] | None = None,
    loggers: Sequence[Any] = (),
    order: Mapping[str, int] | None = None,
    print_fn: Callable[[str], None] = print,
) -> EvalResult:
    """Separates and scores every batch, then writes the report into ``out_dir``.

    Args:
        model: the separator (eval mode is set here).
        batches: dicts with ``mix`` (B, T), ``sources`` (B, C, T), ``mix_clean`` (B, T),
            ``lengths`` (B,), ``ids`` (list of B str), as the DataModule yields them.
        n_batches: for the progress bar (None: unknown).
        n_utterances: for the progress bar.
        sample_rate: audio rate (thresholds, PESQ mode, wav files).
        out_dir: results folder (created).
        opts: :class:`EvalOptions`.
        example_ids: mixture IDs whose audio goes into ``examples/<ID>/``.
        info: extra entries for ``final_metrics.json`` (checkpoint, data, method …).
        loggers: Lightning loggers to receive the summary (W&B also a table and audio).
        order: mixture ID → dataset index, to write the CSV in dataset order.
        print_fn: where the summary table goes.

    Nothing is written into ``out_dir`` until every utterance is scored: the example audio is kept
    in memory (a few utterances), so a failure part way (a bad file, a non-finite model output)
    leaves no half-written results folder.

    Returns:
        :class:`EvalResult`.

    Raises:
        EvaluationError: the model's output for an utterance is not finite.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    device = resolve_device(opts.device)
    sep = Separator(model, device, sample_rate, opts)
    columns = list(report.BASE_COLUMNS) + (list(report.PESQ_COLUMNS) if opts.pesq else [])
    example_ids = set(example_ids or ())
    examples: list[tuple[str, tuple[Any, ...]]] = []  # (ID, write_example's audio arguments)
    rows: list[dict[str, Any]] = []

    bar = tqdm(
        total=n_utterances,
        desc="evaluating",
        unit="utt",
        disable=not opts.progress,
        file=sys.stderr,
    )
    for batch in _check_batches(batches):
        ests = sep(batch["mix"], batch["lengths"])
        for b, est in enumerate(ests):
            n = est.shape[-1]
            uid = str(batch["ids"][b])
            if not bool(torch.isfinite(est).all()):
                # The input is finite (read_wav checks every file) and load_model refuses
                # non-finite weights: the network itself overflows on this utterance.
                raise EvaluationError(
                    f"the model's output for utterance {uid!r} holds NaN/Inf values (its input "
                    f"is finite): no valid metrics; nothing was written to {out_dir}"
                )
            mix = batch["mix"][b, :n].to(device)
            ref = batch["sources"][b, :, :n].to(device)
            clean = batch["mix_clean"][b, :n].to(device) if "mix_clean" in batch else None
            m, perm = utterance_metrics(
                est, ref, mix, clean, sample_rate=sample_rate, with_pesq=opts.pesq
            )
            rows.append({report.ID_COLUMN: uid, **m})
            if uid in example_ids:
                audio = (
                    mix.cpu().numpy(),
                    ref.cpu().numpy(),
                    est[perm].cpu().numpy(),
                    None if clean is None else clean.cpu().numpy(),
                )
                examples.append((uid, audio))
            bar.update(1)
    bar.close()
    if not rows:
        raise ValueError("the evaluation split yielded no utterances")
    out_dir.mkdir(parents=True, exist_ok=True)
    example_dirs: list[Path] = []
    for uid, audio in examples:
        example_dirs.append(out_dir / "examples" / uid)
        report.write_example(example_dirs[-1], sample_rate, *audio)
    if order is not None:
        rows.sort(key=lambda r: order.get(r[report.ID_COLUMN], math.inf))

    stats = report.summarize(rows, columns)
    summary: dict[str, Any] = {
        "n_utterances": len(rows),
        "metrics": stats,
        "means": {c: s["mean"] for c, s in stats.items()},
        "improvements": {c: stats[c]["mean"] for c in ("si_snr_i", "sdr_i")},
        **dict(info or {}),
        "sample_rate": sample_rate,
        "n_windowed": sep.n_windowed,
        "eval": {k: getattr(opts, k) for k in opts.__dataclass_fields__},
        "examples": sorted(d.name for d in example_dirs),
    }
    files = [out_dir / "all_metrics.csv", out_dir / "final_metrics.json"]
    report.write_csv(rows, columns, files[0])
    report.write_json(summary, files[1])
    plots = report.make_plots(rows, out_dir)
    files += plots
    title = f"usgm evaluation: {len(rows)} utterances"
    if info:
        title += f" ({', '.join(f'{k}={info[k]}' for k in ('method', 'split') if info.get(k))})"
    print_fn(report.format_table(stats, title))
    print_fn(f"results in {out_dir}")
    report.log_to_loggers(loggers, stats, rows, columns, example_dirs, plots)
    return EvalResult(rows=rows, stats=stats, summary=summary, out_dir=out_dir, files=files)


def _check_batches(batches: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for batch in batches:
        missing = [k for k in ("mix", "sources", "lengths", "ids") if k not in batch]
        if missing:
            raise KeyError(f"evaluation batch lacks key(s) {missing}")
        yield batch


_VALID_ALIASES = ("valid", "val", "validation", "validate")


def run(
    ckpt_path: str | Path,
    data: Mapping[str, Any],
    split: str,
    results_dir: str | Path,
    eval_opts: Mapping[str, Any] | None = None,
    loggers: Sequence[Any] = (),
    print_fn: Callable[[str], None] = print,
) -> EvalResult:
    """Evaluates a checkpoint (any ``method``) or exported model on one split of a LibriMix root.

    Args:
        ckpt_path: Lightning checkpoint or ``usgm-export`` file.
        data: :class:`usgm.data.datamodule.LibriMixDataModule` keyword arguments (``conf/data``
            without ``_target_``/``split``). ``n_src`` and ``sample_rate`` are taken from the model;
            ``max_test`` limits the evaluated split.
        split: split folder (``test``, ``dev`` …; ``valid`` means the configured ``valid_split``).
        results_dir: where the report goes.
        eval_opts: :class:`EvalOptions` fields.
        loggers: Lightning loggers for the summary.
        print_fn: where notes and the table go.

    Returns:
        :class:`EvalResult`.
    """
    from torch.utils.data import DataLoader

    from usgm.data.datamodule import LibriMixDataModule, collate_batch
    from usgm.evaluation.export import load_model

    opts = EvalOptions.from_mapping(eval_opts)
    model, meta = load_model(ckpt_path)
    kw = {k: v for k, v in dict(data).items() if k not in ("_target_", "split", "generate")}
    for key in ("n_src", "sample_rate"):
        if key in kw and kw[key] is not None and int(kw[key]) != int(meta[key]):
            print_fn(f"[usgm] data.{key}={kw[key]} → {meta[key]} (taken from the model)")
        kw[key] = int(meta[key])
    if split in _VALID_ALIASES:
        split = str(kw.get("valid_split", "dev"))
    kw["test_split"] = split
    if kw.get("seed") is None:  # evaluation is deterministic; the seed only names a default
        kw["seed"] = 0
    dm = LibriMixDataModule(**kw)
    try:
        dm.setup("test")
    except SourceCountError as err:
        # data.n_src is overridden from the model above, so "set data.n_src=…" would not help.
        raise DataError(
            f"the model separates {err.expected} speakers but {err.csv_path} lists {err.found} "
            f"sources per mixture: evaluate it on a Libri{err.expected}Mix root (data.root=…), "
            f"or evaluate a {err.found}-speaker model on this one"
        ) from err
    dataset = dm.test_set
    assert dataset is not None
    utts = dataset.utterances
    sr = int(meta["sample_rate"])
    batches = length_batches(
        [u.length for u in utts],
        opts.batch_size,
        opts.max_pad_ratio,
        max(1, round(opts.max_batch_seconds * sr)),
    )
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate_batch,
        num_workers=dm.num_workers,
        pin_memory=dm.pin_memory,
    )
    ids = [u.id for u in utts]
    info = {
        "ckpt_path": str(Path(ckpt_path).resolve()),
        "method": meta.get("method"),
        "model_format": meta.get("format"),
        "epoch": meta.get("epoch"),
        "global_step": meta.get("global_step"),
        "split": split,
        "data": {
            "root": str(Path(dm.root).resolve()),
            "split": split,
            "n_src": dm.n_src,
            "sample_rate": dm.sample_rate,
            "mode": dm.mode,
            "task": dm.task,
            "max_test": kw.get("max_test"),
        },
        "model": meta.get("model"),
    }
    return evaluate(
        model,
        loader,
        n_batches=len(batches),
        n_utterances=len(utts),
        sample_rate=sr,
        out_dir=results_dir,
        opts=opts,
        example_ids={ids[i] for i in example_indices(len(ids), opts.n_examples)},
        info=info,
        loggers=loggers,
        order={uid: i for i, uid in enumerate(ids)},
        print_fn=print_fn,
    )
