"""tfface.weights."""
