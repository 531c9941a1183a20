"""The bottom layer: the algorithm interface, padded client arrays, graphs and user errors.

Everything else may import it; it imports nothing of the package (jax, flax and numpy only).
"""
