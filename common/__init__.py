"""What both halves (the curation ensembles and the β-VAE) use: config ↔ JSON ↔ CLI,
strategies, the exact global BatchNorm, atomic file writes, image grids and the allocator
setting of image pipelines (`malloc`).

Nothing here imports `vae` or `transfer_learning`.
"""
