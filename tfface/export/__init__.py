"""tfface.export."""
