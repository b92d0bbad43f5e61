"""Command-line tools: absl flags parsed here, work done by `tfface`."""
