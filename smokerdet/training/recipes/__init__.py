"""smokerdet.training.recipes."""
