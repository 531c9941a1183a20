"""fedjax_syn: JAX-accelerated federated learning benchmarks with synthetic data."""

import pathlib

import setuptools

setuptools.setup(
    name="fedjax_syn",
    version="0.1.0",
    description=(
        "Vectorized federated learning benchmarks in JAX: FedLoG, dataset "
        "condensation and baselines on graphs and images."
    ),
    long_description=pathlib.Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["fedjax_syn*", "experiments*"]),
    install_requires=[
        "jax>=0.6,<0.11",
        "flax>=0.10,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "tensorflow-datasets>=4.9.8,<4.10",
        "absl-py>=2.1,<3",
        "ml-collections>=1.0,<2",
        "numpy>=1.26,<2.5",
        "scipy>=1.11,<1.18",
        "scikit-learn>=1.4,<1.10",
        "networkx>=3.2,<3.7",
        "matplotlib>=3.8,<3.12",
        "tqdm>=4.66,<5",
        "dp-accounting>=0.6,<0.7",
        "filelock>=3.12,<4",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            "ruff>=0.17.6,<0.18",
            "nbclient>=0.10,<0.12",
            "nbformat>=5.10,<6",
            "ipykernel>=6.29,<8",
            "import-linter>=2.17,<3",
        ],
        "tfds": ["tensorflow-cpu>=2.16"],
        "metis": ["pymetis>=2023.1"],
    },
)
