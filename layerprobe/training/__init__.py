"""Training with checkpoints: the loop (resumable after a kill), device-side augmentation, checkpoint files."""
