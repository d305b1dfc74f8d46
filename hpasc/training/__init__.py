"""Training: models, checkpoints, targets, sampling, augmentation, the loop."""
