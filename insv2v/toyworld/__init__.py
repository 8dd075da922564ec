"""The toy world: procedural paired videos with exact ground truth, and the models trained on it."""
