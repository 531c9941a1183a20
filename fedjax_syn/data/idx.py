"""Reader for the IDX format of MNIST-style datasets (LeCun et al., 1998).

An IDX file is a big-endian header (two zero bytes, a data-type code, the number of dimensions, then
one uint32 per dimension) followed by the raw array. The files are usually gzip-compressed. Every
field is checked, because a truncated download otherwise silently becomes a short or garbled array.
"""

import gzip
import os
import zlib

import numpy as np

from fedjax_syn.core.errors import UserError

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

    Raises `UserError` naming the file when it is missing, not IDX, or corrupt or truncated.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found")
    content = _read_bytes(path)
    if len(content) < 4 or content[:2] != b"\x00\x00":
        raise UserError(f"{path}: not an IDX file (header must start with two zero bytes)")
    code, ndim = content[2], content[3]
    if code not in _DTYPES:
        allowed = ", ".join(f"0x{c:02X}" for c in _DTYPES)
        raise UserError(f"{path}: unknown IDX data-type code 0x{code:02X}; allowed: {allowed}")
    if ndim == 0:
        raise UserError(f"{path}: IDX header declares zero dimensions")
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise UserError(f"{path}: truncated IDX header ({len(content)} of {header_size} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(content, ">u4", count=ndim, offset=4))
    dtype = _DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(content) - header_size
    if actual != expected:
        dims = "x".join(map(str, shape))
        raise UserError(
            f"{path}: header declares {dims} {dtype.name} = {expected} data bytes, "
            f"file holds {actual}"
        )
    array = np.frombuffer(content, dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        content = f.read()
    if content[:2] != _GZIP_MAGIC:
        return content
    try:
        return gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: corrupt or truncated gzip data ({e})") from e
