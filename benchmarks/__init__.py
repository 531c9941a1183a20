"""Benchmarks of the library: one timing harness (`harness`), the programs they time, named
workloads (`workloads`), and the generator of BENCHMARKS.md's tables (`report`).

Each benchmark runs from the repository root as `python -m benchmarks.<name>` and writes its
figures, with a description of the machine, to `benchmarks/results/<name>.json`. This package
may import the library (`fedjax_syn`) and the experiment configs; the library never imports it
(`lint-imports` checks that), and it is not installed with the package.
"""
