"""What both halves (the curation ensembles and the β-VAE) use: config ↔ JSON ↔ CLI,
strategies, the exact global BatchNorm, atomic file writes and image grids.

Nothing here imports `vae` or `transfer_learning`.
"""
