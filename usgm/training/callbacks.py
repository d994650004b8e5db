"""Callbacks: validation audio examples and spectrograms (W&B, TensorBoard), fault-tolerant
last checkpoint (periodic, and on SIGTERM)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException


def spectrogram_figure(signals: dict[str, np.ndarray], sample_rate: int):
    """Log-magnitude spectrograms stacked vertically; returns a matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(signals), 1, figsize=(8, 1.8 * len(signals)), squeeze=False)
    for ax, (name, x) in zip(axes[:, 0], signals.items(), strict=True):
        spec = torch.stft(
            torch.as_tensor(x, dtype=torch.float32),
            n_fft=256,
            hop_length=64,
            window=torch.hann_window(256),
            return_complex=True,
        ).abs()
        ax.imshow(
            20 * torch.log10(spec + 1e-6).numpy(),
            origin="lower",
            aspect="auto",
            extent=(0, len(x) / sample_rate, 0, sample_rate / 2000),
            vmin=-80,
            vmax=20,
            cmap="magma",
        )
        ax.set_ylabel(f"{name}\nkHz")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    return fig


class AudioExampleLogger(pl.Callback):
    """Logs the first ``n_examples`` validation mixtures, references and estimates.

    Audio and a spectrogram image go to W&B (``wandb.Audio``/``wandb.Image``) and TensorBoard
    when those loggers are active; other loggers are skipped.

    Args:
        n_examples: validation utterances to log (the first batches, first item each).
        every_n_epochs: log every this many epochs.
    """

    def __init__(self, n_examples: int = 2, every_n_epochs: int = 1) -> None:
        self.n_examples = n_examples
        self.every_n_epochs = max(1, every_n_epochs)
        self._examples: list[dict[str, Any]] = []

    def _active(self, trainer: pl.Trainer) -> bool:
        return (
            trainer.is_global_zero
            and not trainer.sanity_checking
            and trainer.current_epoch % self.every_n_epochs == 0
            and any(isinstance(lg, WandbLogger | TensorBoardLogger) for lg in trainer.loggers)
        )

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._examples = []

    @torch.no_grad()
    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if batch_idx >= self.n_examples or not self._active(trainer):
            return
        n = int(batch["lengths"][0]) if "lengths" in batch else batch["mix"].shape[-1]
        mix = batch["mix"][:1, :n]
        est = pl_module(mix)[0].float().cpu().numpy()
        ex = {"id": batch["ids"][0] if "ids" in batch else str(batch_idx)}
        ex["mixture"] = mix[0].float().cpu().numpy()
        for i, s in enumerate(batch["sources"][0, :, :n].float().cpu().numpy()):
            ex[f"ref{i + 1}"] = s
        for i, s in enumerate(est):
            ex[f"est{i + 1}"] = s
        self._examples.append(ex)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._examples or not self._active(trainer):
            return
        import matplotlib.pyplot as plt

        sr = int(pl_module.hparams.get("sample_rate", 8000))
        for k, ex in enumerate(self._examples):
            signals = {key: v for key, v in ex.items() if key != "id"}
            fig = spectrogram_figure(signals, sr)
            for lg in trainer.loggers:
                if isinstance(lg, WandbLogger):
                    import wandb

                    lg.experiment.log(
                        {
                            f"val_examples/{k}/{name}": wandb.Audio(
                                x / max(1e-8, float(np.abs(x).max())), sample_rate=sr
                            )
                            for name, x in signals.items()
                        }
                        | {f"val_examples/{k}/spectrogram": wandb.Image(fig)},
                        step=trainer.global_step,
                    )
                elif isinstance(lg, TensorBoardLogger):
                    for name, x in signals.items():
                        peak = max(1e-8, float(np.abs(x).max()))
                        lg.experiment.add_audio(
                            f"val_examples/{k}/{name}",
                            torch.as_tensor(x / peak)[None],
                            trainer.global_step,
                            sample_rate=sr,
                        )
                    lg.experiment.add_figure(
                        f"val_examples/{k}/spectrogram", fig, trainer.global_step
                    )
            plt.close(fig)
        self._examples = []


class LastCheckpoint(pl.Callback):
    """Keeps ``<dirpath>/last.ckpt`` current for fault-tolerant resume.

    Saved every ``every_n_train_steps`` optimizer steps (so a run killed mid-epoch loses at most
    that many steps), after each validation, at the end of training and when training stops on
    SIGTERM (what SLURM and other schedulers send before killing a job: Lightning turns it into
    a :class:`~lightning.pytorch.utilities.exceptions.SIGTERMException` at the next batch
    boundary, on every rank together). Each save goes to a temporary file that replaces
    ``last.ckpt`` only when complete, so a kill during the write never leaves a truncated
    checkpoint behind. Together with the training loader's saved position, the checkpoint
    resumes the same data stream.

    Args:
        dirpath: checkpoint folder.
        every_n_train_steps: period in optimizer steps; 0 disables the step trigger.
        filename: name of the checkpoint file.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 500, filename: str = "last.ckpt"):
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps
        self.filename = filename
        self._saved_at: int | None = None
        # Where and at which step the checkpoint for a SIGTERM was saved (None: not stopped so).
        self.preempted: tuple[Path, int] | None = None

    @property
    def path(self) -> Path:
        """The checkpoint file, ``<dirpath>/<filename>``."""
        return self.dirpath / self.filename

    def _save(self, trainer: pl.Trainer) -> None:
        if self._saved_at == trainer.global_step or trainer.fast_dev_run:
            return
        path = self.path
        tmp = path.with_name(path.name + ".partial")
        trainer.save_checkpoint(tmp)  # every rank calls; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, path)
        trainer.strategy.barrier("usgm_last_checkpoint")
        self._saved_at = trainer.global_step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _collective_free_sigterm(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = self.every_n_train_steps
        if n and trainer.global_step > 0 and trainer.global_step % n == 0:
            self._save(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        # Only a SIGTERM while fitting: the loops raise it at a batch boundary on every rank
        # together, so the state is consistent and the collective save cannot deadlock. After
        # any other exception the state may be half-updated (or the ranks out of step).
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        self._save(trainer)
        self.preempted = (self.path, trainer.global_step)


def _collective_free_sigterm(trainer: pl.Trainer) -> None:
    """Swaps Lightning's SIGTERM notifier for one that runs no collective inside the handler.

    Lightning 2.6's notifier broadcasts from rank 0 inside the signal handler; on ranks that are
    in (or between) other collectives at that moment the broadcasts pair up with the wrong
    operation and a 2-process gloo run hangs when every rank gets SIGTERM (as under SLURM).
    Lightning's training loop already broadcasts rank 0's flag at every batch, so setting the
    flag (and forwarding the signal to the ranks Lightning started, as its notifier does) is
    enough. The other handlers Lightning composed with it (SLURM's, earlier ones) are kept, and
    so is its SIGUSR1 auto-requeue handler, which this does not touch.
    """
    connector = getattr(trainer, "_signal_connector", None)
    if connector is None or threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    handlers = getattr(current, "signal_handlers", None)  # Lightning's _HandlersCompose
    if not isinstance(handlers, list):
        return
    original = connector._sigterm_notifier_fn

    def notify(signum: int, frame: Any) -> None:
        if not connector.received_sigterm:
            launcher = trainer.strategy.launcher
            if launcher is not None:
                launcher.kill(signum)
        connector.received_sigterm = True

    current.signal_handlers = [notify if h == original else h for h in handlers]
