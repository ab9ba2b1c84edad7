"""Renderers over tensors and callbacks.

Nothing here imports ``radistill.fields``: a renderer is handed the callbacks it needs
(``query_fn(x, d) -> (sigma, rgb)``, ``density_fn(x) -> sigma``), so every field kind can use
the same sampling and compositing code, and the code doubles as the reference for the fused
kernels.
"""
