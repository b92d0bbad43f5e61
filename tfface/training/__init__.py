"""tfface.training."""
