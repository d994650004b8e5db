"""Shareable model files: export a training checkpoint to weights + config, and load either.

An export is a plain dict, loadable with ``torch.load(weights_only=True)`` so opening a shared model
cannot run code::

    {"format": "usgm-model", "version": 1, "model": cfg, "sample_rate": sr,
     "state_dict": {...}, "meta": {"method": ..., "n_src": ..., ...}}

A Lightning checkpoint is read the same safe way: ``hyper_parameters.model`` is the network config,
``hyper_parameters.sample_rate`` the rate, and the network weights are the ``model.``-prefixed keys
of ``state_dict``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

EXPORT_FORMAT = "usgm-model"
EXPORT_VERSION = 1
_PREFIX = "model."


class ModelFileError(ValueError):
    """A file that is not a usgm model (export or Lightning checkpoint); the message names it."""


def load_failure_reason(err: BaseException) -> str:
    """The useful part of a ``torch.load`` error, whole, on one line.

    torch's weights-only refusal opens with a paragraph about its changed default (and advice to
    load with ``weights_only=False``, which would run the file's code); the cause is the
    "WeightsUnpickler error:" part, e.g. "Unsupported global: GLOBAL builtins.print was not an
    allowed global by default". Other errors keep their first line. Either is cut at a sentence
    end, never in the middle of a word, and prefixed with the exception type.
    """
    text = str(err).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].split("Check the documentation of torch.load", 1)[0]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    first = line.split(". ", 1)[0].rstrip(".") if line else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _read(path: Path) -> Any:
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, not a model file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types here (pickle, zip, EOF, runtime)
        raise ModelFileError(
            f"{path}: not a usgm model file (torch.load(weights_only=True) refused it: "
            f"{load_failure_reason(err)})"
        ) from err


def nonfinite_weights(state: Mapping[str, torch.Tensor]) -> str | None:
    """Describe the non-finite entries of a state dict, or None when every value is finite.

    Returns:
        e.g. ``"12 of 3456 values are NaN/Inf, in 'encoder.conv.weight', 'mask.norm.bias'"``.
    """
    names, bad, total = [], 0, 0
    for name, value in state.items():
        if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            continue
        total += value.numel()
        n = int((~torch.isfinite(value)).sum())
        if n:
            bad += n
            names.append(repr(name))
    if not bad:
        return None
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more tensors" if len(names) > 3 else "")
    return f"{bad} of {total} values are NaN/Inf, in {shown}"


def create_temp(directory: Path, prefix: str, suffix: str) -> Path:
    """Create an empty, new file in ``directory`` whose mode follows the umask (like ``open``).

    ``tempfile.mkstemp`` always creates mode 0600, which the final ``os.replace`` would carry
    over to the user's output files.

    Returns:
        The path of the new, empty file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        path = directory / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(path, flags, 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary name in {directory} (prefix {prefix!r})")


def _plain(value: Any) -> Any:
    """Copies nested mappings/sequences into plain dicts/lists (export must stay weights_only-safe)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _unpack(obj: Any, path: Path) -> tuple[dict, int, dict[str, torch.Tensor], dict[str, Any]]:
    """→ (model cfg, sample rate, network state_dict, meta) of an export or Lightning checkpoint."""
    if not isinstance(obj, Mapping):
        raise ModelFileError(f"{path}: not a usgm model file (top level is {type(obj).__name__})")
    if obj.get("format") == EXPORT_FORMAT:
        version = obj.get("version")
        if version != EXPORT_VERSION:
            raise ModelFileError(
                f"{path}: usgm model format version {version!r} is not supported "
                f"(this usgm reads version {EXPORT_VERSION})"
            )
        for key in ("model", "sample_rate", "state_dict"):
            if key not in obj:
                raise ModelFileError(f"{path}: usgm model file lacks key {key!r}")
        meta = dict(obj.get("meta") or {})
        meta["format"] = EXPORT_FORMAT
        return dict(obj["model"]), int(obj["sample_rate"]), dict(obj["state_dict"]), meta
    if "state_dict" in obj and "hyper_parameters" in obj:
        hp = obj["hyper_parameters"]
        if not isinstance(hp, Mapping) or not isinstance(hp.get("model"), Mapping):
            raise ModelFileError(
                f"{path}: checkpoint lacks hyper_parameters.model (not a usgm run)"
            )
        if "sample_rate" not in hp:
            raise ModelFileError(f"{path}: checkpoint lacks hyper_parameters.sample_rate")
        state = {
            k[len(_PREFIX) :]: v for k, v in obj["state_dict"].items() if k.startswith(_PREFIX)
        }
        if not state:
            raise ModelFileError(f"{path}: checkpoint has no '{_PREFIX}*' weights")
        meta = {
            "format": "lightning-checkpoint",
            "method": hp.get("method"),
            "epoch": obj.get("epoch"),
            "global_step": obj.get("global_step"),
        }
        return dict(hp["model"]), int(hp["sample_rate"]), state, meta
    raise ModelFileError(
        f"{path}: not a usgm model file (neither an export with format={EXPORT_FORMAT!r} "
        "nor a checkpoint with 'state_dict' and 'hyper_parameters')"
    )


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Loads an exported usgm model or a Lightning training checkpoint, without running code.

    Args:
        path: ``usgm-export`` output or a ``.ckpt`` written by ``train.py``.
        device: where to put the model.

    Returns:
        ``(model, meta)``: the :class:`usgm.models.UnifiedSeparator` in eval mode and a dict with
        ``sample_rate``, ``n_src``, ``method``, ``model`` (network config), ``format``, ``path``
        (plus ``epoch`` / ``global_step`` for checkpoints and the export's own meta).

    Raises:
        ModelFileError: the file is missing, unreadable, not a usgm model, or its weights hold
            NaN/Inf (a diverged run: it could only produce NaN audio and metrics).
    """
    from usgm.models import build_model

    path = Path(path)
    cfg, sample_rate, state, meta = _unpack(_read(path), path)
    problem = nonfinite_weights(state)
    if problem:
        raise ModelFileError(
            f"{path}: the model's weights are not finite ({problem}): the training run diverged; "
            "use an earlier checkpoint"
        )
    try:
        model = build_model(cfg)
    except Exception as err:
        raise ModelFileError(f"{path}: invalid model config ({err})") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelFileError(f"{path}: weights do not fit the model config ({first})") from err
    model.eval().to(device)
    meta.update(
        {
            "sample_rate": sample_rate,
            "n_src": int(getattr(model, "n_src", cfg.get("n_src", 2))),
            "model": cfg,
            "path": str(path),
        }
    )
    meta.setdefault("method", None)
    return model, meta


def export_model(src: str | os.PathLike, dst: str | os.PathLike) -> dict[str, Any]:
    """Writes ``dst`` (weights + config, ``weights_only``-loadable) from a checkpoint or export.

    The file is written to a temporary name next to ``dst`` and renamed once complete.

    Args:
        src: Lightning checkpoint or existing export.
        dst: output path.

    Returns:
        The meta dict stored in the export.
    """
    model, meta = load_model(src)
    payload = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "model": _plain(meta["model"]),
        "sample_rate": int(meta["sample_rate"]),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": {
            "method": meta.get("method"),
            "n_src": int(meta["n_src"]),
            "source": Path(src).name,
            "epoch": meta.get("epoch"),
            "global_step": meta.get("global_step"),
        },
    }
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp(dst.parent, prefix=f".{dst.name}.", suffix=".partial")
    try:
        torch.save(payload, tmp)
        torch.load(tmp, map_location="cpu", weights_only=True)  # guarantee the promise on disk
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return payload["meta"]


def main(argv: list[str] | None = None) -> int:
    """``usgm-export CKPT OUT.pt``: weights + model config only, safe to share."""
    parser = argparse.ArgumentParser(
        prog="usgm-export",
        description="Export a usgm training checkpoint to a weights-only model file "
        "(loadable with torch.load(weights_only=True) / usgm.load_model).",
    )
    parser.add_argument("ckpt", help="training checkpoint (.ckpt) or an existing export")
    parser.add_argument("out", help="output model file, e.g. model.pt")
    args = parser.parse_args(argv)
    try:
        meta = export_model(args.ckpt, args.out)
    except (ModelFileError, OSError) as err:
        print(f"usgm-export: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (method={meta['method']}, n_src={meta['n_src']})")
    return 0
