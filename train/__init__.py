"""facemark.train: augmentation, losses, the training loop (DDP, resume), checkpoints, evaluation."""
