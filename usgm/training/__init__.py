"""Training: the LightningModule (methods ss_only / mtl / gm / gm_released), callbacks, and the
factory + pipeline that turn a Hydra config into a run."""
