"""tfface.align."""
