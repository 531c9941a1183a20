"""Size checks shared by the file readers: what a header declares must be backed by the file.

A damaged or hostile header can declare any shape. Numpy's npz reader allocates the declared array
before reading it, and a decompressor fills whatever it is asked for, so a few bytes could ask for
terabytes. Each reader here compares the declared size with what the file can hold *before* it
allocates, and reports a mismatch as one `UserError` line naming the file.
"""

import os
import zipfile

import numpy as np

from fedjax_syn.core.errors import UserError

# zlib's deflate never inflates one compressed byte to more than 1032 bytes (RFC 1951 limits a
# 258-byte match to a 1-2 bit code); the slack covers a stream's fixed headers.
MAX_DEFLATE_RATIO = 1032
_DEFLATE_SLACK = 1024
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def max_inflated_size(compressed_size: int) -> int:
    """The most bytes a deflate stream of `compressed_size` bytes can decompress to."""
    return MAX_DEFLATE_RATIO * compressed_size + _DEFLATE_SLACK


def declared_nbytes(shape: tuple[int, ...], itemsize: int, source: str) -> int:
    """Bytes of an array of `shape` (exact Python integers: no int64 overflow)."""
    if any(d < 0 for d in shape):
        raise UserError(f"{source}: header declares a negative dimension in {shape}")
    return itemsize * int(np.prod(shape, dtype=object))


def check_dense_fits(shape: tuple[int, ...], dtype: np.dtype, source: str) -> None:
    """Refuses a dense array that would not fit in this machine's physical memory.

    For sizes a file does not back (the column count of a sparse matrix, the node count implied by
    an index), physical memory is the only honest bound: such an array cannot be built anyway.
    """
    nbytes = declared_nbytes(tuple(int(d) for d in shape), np.dtype(dtype).itemsize, source)
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if nbytes > memory:
        raise UserError(
            f"{source}: a dense {'x'.join(map(str, shape))} array needs {nbytes} bytes, more than "
            f"this machine's {memory} bytes of memory"
        )


def read_npz(path: str | os.PathLike, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Reads the arrays `keys` of an `.npz`, checking every header before allocating its array.

    Refused with a `UserError` naming the file (and key): not a zip file; a missing key; an object
    array (it would need pickle); a member whose header declares more or fewer bytes than the
    member holds; a member whose stated size its compressed bytes cannot inflate to.
    """
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            arrays = {}
            for key in keys:
                info = members.get(f"{key}.npy")
                if info is None:
                    raise UserError(f"{path}: missing array {key!r}")
                _check_member(archive, info, f"{path}[{key}]")
                with archive.open(info) as f:
                    arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
            return arrays
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"{path}: not a readable npz file ({detail})") from e


def _check_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> None:
    if info.compress_type == zipfile.ZIP_STORED:
        stored_ok = info.file_size == info.compress_size
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        stored_ok = info.file_size <= max_inflated_size(info.compress_size)
    else:
        raise UserError(f"{source}: compression method {info.compress_type} is not read")
    if not stored_ok:
        raise UserError(
            f"{source}: zip entry states {info.file_size} bytes, more than its "
            f"{info.compress_size} stored bytes can hold"
        )
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in _HEADER_READERS:
            raise UserError(f"{source}: npy format version {version} is not read")
        shape, _, dtype = _HEADER_READERS[version](f)
        header_size = f.tell()
    if dtype.hasobject:
        raise UserError(f"{source}: holds Python objects ({dtype}), which would need pickle")
    declared = declared_nbytes(shape, dtype.itemsize, source)
    if header_size + declared != info.file_size:
        dims = "x".join(map(str, shape))
        raise UserError(
            f"{source}: header declares {dims} {dtype} = {declared} data bytes, "
            f"the entry holds {info.file_size - header_size}"
        )
