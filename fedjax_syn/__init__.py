"""fedjax_syn: vectorized federated learning with synthetic data, in JAX."""

__version__ = "0.1.0"
