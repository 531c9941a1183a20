"""A restricted unpickler for the Planetoid citation-graph files.

The Planetoid files (Yang, Cohen & Salakhutdinov, "Revisiting Semi-Supervised Learning with Graph
Embeddings", ICML 2016) are Python-2 pickles of scipy CSR matrices, one-hot numpy arrays and a
`defaultdict(list)` adjacency list. A plain `pickle.load` would run any callable a tampered file
names, so `find_class` here admits only the handful of globals those files need. Every other global
(`os.system`, `builtins.eval`, ...) is refused before it is ever called.

Nor may an allowed global allocate more than the file holds: arrays and sparse matrices can only
be created empty and then filled from the file's bytes by their pickled state (which numpy checks
against the declared shape), never by calling their constructor with a shape.

Module paths renamed since the files were written (Python 3, NumPy 2, SciPy's private submodules
that go away in SciPy 2) are remapped to the ones that exist now.
"""

import importlib
import io
import os
import pickle
from typing import Any, BinaryIO

import numpy as np
import scipy.sparse as sp

from fedjax_syn.core.errors import UserError

# Old or private module path -> the canonical module used in `_ALLOWED`.
_MODULE_ALIASES = {
    "__builtin__": "builtins",
    "numpy.core.multiarray": "numpy.multiarray",
    "numpy._core.multiarray": "numpy.multiarray",
    "scipy.sparse.csr": "scipy.sparse",
    "scipy.sparse._csr": "scipy.sparse",
    "scipy.sparse.csc": "scipy.sparse",
    "scipy.sparse._csc": "scipy.sparse",
}

# The only globals a Planetoid file may name, by canonical module.
_ALLOWED = {
    "builtins": {"list", "dict", "set", "int", "float"},
    "collections": {"defaultdict", "OrderedDict"},
    "numpy": {"ndarray", "dtype"},
    "numpy.multiarray": {"_reconstruct"},
    "scipy.sparse": {"csr_matrix", "csc_matrix"},
}


class _StateOnly:
    """Stands in for an array or sparse-matrix class: creates a blank instance of the real class
    for pickle's NEWOBJ (state then fills it) and refuses a call with arguments (a shape)."""

    real: type

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            raise pickle.UnpicklingError(
                f"a {cls.real.__name__} may only be restored from its pickled state, not by a call"
            )
        return object.__new__(cls.real)


def _state_only(real: type) -> type:
    return type(f"StateOnly_{real.__name__}", (_StateOnly,), {"real": real})


_STATE_ONLY = {
    ("numpy", "ndarray"): _state_only(np.ndarray),
    ("scipy.sparse", "csr_matrix"): _state_only(sp.csr_matrix),
    ("scipy.sparse", "csc_matrix"): _state_only(sp.csc_matrix),
}


def _reconstruct(cls: type, shape: tuple, dtype: Any) -> np.ndarray:
    """numpy's pickle constructor, limited to what numpy's own pickles do: an empty ndarray."""
    if cls is not _STATE_ONLY["numpy", "ndarray"] or tuple(shape) != (0,):
        raise pickle.UnpicklingError("an array may only be restored from its pickled state")
    return _import_multiarray()._reconstruct(np.ndarray, shape, dtype)


def _import_multiarray():
    """NumPy's C array module: `numpy._core.multiarray` on NumPy 2, `numpy.core...` before."""
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals; `source` names the file in errors."""

    def __init__(self, file: BinaryIO, source: str):
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        canonical = _MODULE_ALIASES.get(module, module)
        if name not in _ALLOWED.get(canonical, ()):
            raise UserError(
                f"refusing to unpickle {self._source}: it names the global {module}.{name}, "
                "which is not allowed in a graph data file"
            )
        if canonical == "numpy.multiarray":
            return _reconstruct
        return _STATE_ONLY.get((canonical, name)) or getattr(
            importlib.import_module(canonical), name
        )


def restricted_load(file: BinaryIO, source: str) -> Any:
    """Unpickles one object from `file` with `RestrictedUnpickler` (latin-1 for Python-2 strings).

    Any failure (a refused global, a truncated or corrupt stream) is a `UserError` naming `source`.
    """
    try:
        return RestrictedUnpickler(file, source).load()
    except UserError:
        raise
    except Exception as e:  # every decoding failure means a corrupt file
        detail = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"cannot unpickle {source}: {detail}") from e


def load_pickle(path: str | os.PathLike) -> Any:
    """Reads one restricted pickle from the file at `path`.

    The file is read whole first: a length field in the stream can then ask for no more bytes
    than the file has (a file object would allocate the stated length before finding it short).
    """
    with open(path, "rb") as f:
        return restricted_load(io.BytesIO(f.read()), os.fspath(path))
