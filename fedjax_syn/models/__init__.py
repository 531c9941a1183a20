"""Flax models (MLP, DC-style ConvNet, GCN, GraphSAGE), each used through a pure
`apply(params, inputs, ...)`.

Imports `core/` only.
"""
