"""A restricted unpickler for the Planetoid citation-graph files.

The Planetoid files (Yang, Cohen & Salakhutdinov, "Revisiting Semi-Supervised Learning with Graph
Embeddings", ICML 2016) are Python-2 pickles of scipy CSR matrices, one-hot numpy arrays and a
`defaultdict(list)` adjacency list. A plain `pickle.load` would run any callable a tampered file
names, so `find_class` here admits only the handful of globals those files need. Every other global
(`os.system`, `builtins.eval`, ...) is refused before it is ever called.

Module paths renamed since the files were written (Python 3, NumPy 2, SciPy's private submodules
that go away in SciPy 2) are remapped to the ones that exist now.
"""

import importlib
import pickle
from typing import Any, BinaryIO

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
            return getattr(_import_multiarray(), name)
        return getattr(importlib.import_module(canonical), name)


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


def load_pickle(path) -> Any:
    """Reads one restricted pickle from the file at `path`."""
    with open(path, "rb") as f:
        return restricted_load(f, str(path))
