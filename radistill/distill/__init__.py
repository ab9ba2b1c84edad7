"""The distill engine: one training loop for every teacher (photos now, fields later)."""
