"""Reader for the IDX format of MNIST-style datasets (LeCun et al., 1998).

An IDX file is a big-endian header (two zero bytes, a data-type code, the number of dimensions, then
one uint32 per dimension) followed by the raw array. The files are usually gzip-compressed. Every
field is checked, because a truncated download otherwise silently becomes a short or garbled array.
"""

import gzip
import os
import zlib
from typing import BinaryIO

import numpy as np

from fedjax_syn.core.errors import UserError
from fedjax_syn.data.files import declared_nbytes, max_inflated_size

# IDX data-type codes and the big-endian numpy dtypes they denote.
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (gzip-compressed or plain) into an array in native byte order.

    Raises `UserError` naming the file when it is missing, not IDX, or corrupt or truncated. The
    header is checked against the file's size before the data is read, so a header that declares
    an absurd shape is refused without allocating it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found")
    size = os.path.getsize(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not compressed:
            return _read(raw, path, size, exact=True)
        try:
            with gzip.GzipFile(fileobj=raw) as f:
                return _read(f, path, max_inflated_size(size), exact=False)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{path}: corrupt or truncated gzip data ({e})") from e


def _read(f: BinaryIO, path: str, size: int, exact: bool) -> np.ndarray:
    """Parses the stream `f`, which holds `size` bytes (`exact`) or at most `size` (gzip)."""
    head = f.read(4)
    if len(head) < 4 or head[:2] != b"\x00\x00":
        raise UserError(f"{path}: not an IDX file (header must start with two zero bytes)")
    code, ndim = head[2], head[3]
    if code not in _DTYPES:
        allowed = ", ".join(f"0x{c:02X}" for c in _DTYPES)
        raise UserError(f"{path}: unknown IDX data-type code 0x{code:02X}; allowed: {allowed}")
    if ndim == 0:
        raise UserError(f"{path}: IDX header declares zero dimensions")
    header_size = 4 + 4 * ndim
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise UserError(f"{path}: truncated IDX header ({4 + len(dims)} of {header_size} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(dims, ">u4"))
    dtype = _DTYPES[code]
    expected = declared_nbytes(shape, dtype.itemsize, path)
    described = f"header declares {'x'.join(map(str, shape))} {dtype.name} = {expected} data bytes"
    if exact and header_size + expected != size:
        raise UserError(f"{path}: {described}, file holds {size - header_size}")
    if header_size + expected > size:
        raise UserError(f"{path}: {described}, more than a gzip file of this size can hold")
    data = f.read(expected)
    actual = len(data) + sum(map(len, iter(lambda: f.read(1 << 20), b"")))
    if actual != expected:
        raise UserError(f"{path}: {described}, file holds {actual}")
    array = np.frombuffer(data, dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order
