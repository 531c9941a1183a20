"""Flax models. Every model is used through a pure `apply(params, inputs, ...)`."""
