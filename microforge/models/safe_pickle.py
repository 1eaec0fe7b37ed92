"""Reading the two pickles of a public-SliceGAN generator without trusting them. Torch-free.

Why: ``pickle.load`` runs whatever code a file names, and these files come from strangers
(uploads to the service, files downloaded from a paper's data). Both readers here are
restricted unpicklers whose ``find_class`` knows a fixed, tiny list of names, each mapped
to a function of ours; anything else is refused before it is constructed. Every size a
file claims is checked against a bound before memory is allocated for it.

Why not ``torch.load(..., weights_only=True)``: the API process must never import torch
(its image has none), and a state dict is the only thing needed. The format read here is
the one ``torch.save`` has written since PyTorch 1.6 (a zip with ``data.pkl``, one record
per storage under ``data/`` and a ``byteorder`` record); ``load_state_dict`` reads exactly
the plain-tensor subset a ``state_dict()`` uses. The tests compare it with
``torch.load(weights_only=True)`` on files torch writes.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

#: A params file is a few dozen small integers; a few KiB is generous.
MAX_PARAMS_BYTES = 64 * 1024
#: ``data.pkl`` of a state dict: about 100 bytes per tensor.
MAX_STATE_PICKLE_BYTES = 4 * 1024 * 1024
#: All storages together (the public code's largest generators are ~100 MB in fp32).
MAX_STATE_BYTES = 2 * 1024**3
#: Tensors in a state dict, and dimensions of one.
MAX_TENSORS = 10_000
MAX_DIMS = 8

_STORAGE_DTYPES = {
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "HalfStorage": "f2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}
_STORAGE_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")


class UnsafePickleError(ValueError):
    """A pickle that is not the plain data it claims to be; the message says what."""


def load_int_lists(data: bytes, what: str = "the file") -> Any:
    """Unpickle ``data`` allowing only (nested) lists and tuples of ints: no globals at all.

    Plain lists of ints never name a class or function in a pickle, so any GLOBAL, REDUCE
    target or persistent id is refused; the result is then checked to hold nothing else.
    """
    if len(data) > MAX_PARAMS_BYTES:
        raise UnsafePickleError(
            f"{what} is {len(data)} bytes; a SliceGAN params file is a few hundred"
        )
    try:
        value = _NoGlobals(io.BytesIO(data)).load()
    except UnsafePickleError:
        raise
    except Exception as error:  # any malformed pickle: EOF, bad opcode, wrong protocol
        raise UnsafePickleError(f"{what} is not a readable pickle ({error})") from error
    _check_int_lists(value, what, depth=0)
    return value


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(
            f"refused: the pickle wants to load {module}.{name}; a SliceGAN params file "
            "holds only lists of integers"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused: the pickle refers to external objects")


def _check_int_lists(value: Any, what: str, depth: int) -> None:
    if depth > 3:
        raise UnsafePickleError(f"{what} nests lists deeper than a params file does")
    if isinstance(value, list | tuple):
        for item in value:
            _check_int_lists(item, what, depth + 1)
    elif type(value) is not int:  # bool is an int subclass: refused too
        raise UnsafePickleError(
            f"{what} holds a {type(value).__name__}; a SliceGAN params file holds only "
            "lists of integers"
        )


def load_state_dict(path: str | Path, what: str = "the weights file") -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save``d state dict as NumPy arrays, without torch.

    Keys keep their names (``convs.0.weight``); arrays are native-endian copies. Raises
    :class:`UnsafePickleError` for anything that is not a zip-format state dict of plain
    CPU/GPU tensors within the bounds above.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise UnsafePickleError(
            f"{what} is not a PyTorch file saved by torch.save with PyTorch 1.6 or newer "
            "(no zip archive); load it with PyTorch and torch.save it again"
        ) from error
    with archive:
        reader = _StateArchive(archive, what)
        return reader.load()


class _StateArchive:
    """One zip archive: its ``data.pkl`` and the storage records it refers to."""

    def __init__(self, archive: zipfile.ZipFile, what: str) -> None:
        self.archive = archive
        self.what = what
        names = [info.filename for info in archive.infolist()]
        pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise UnsafePickleError(f"{what} has no single data.pkl: not a torch.save file")
        self.prefix = pickles[0][: -len("data.pkl")]
        self.entries = {info.filename: info for info in archive.infolist()}
        ours = [info for name, info in self.entries.items() if name.startswith(self.prefix)]
        if any(info.compress_type != zipfile.ZIP_STORED for info in ours):
            # torch.save stores records uncompressed; a compressed one could inflate to
            # far more than was uploaded.
            raise UnsafePickleError(f"{what} has compressed records, which torch.save never writes")
        total = sum(info.file_size for info in ours)
        if total > MAX_STATE_BYTES:
            raise UnsafePickleError(
                f"{what} holds {total / 2**30:.1f} GiB of tensors; at most "
                f"{MAX_STATE_BYTES / 2**30:.0f} GiB are accepted"
            )
        order = self._read_small(f"{self.prefix}byteorder", default=b"little").strip()
        if order not in (b"little", b"big"):
            raise UnsafePickleError(f"{what} has an unknown byte order {order[:16]!r}")
        self.endian = "<" if order == b"little" else ">"
        self.storages: dict[str, np.ndarray] = {}
        self.tensors = 0

    def _read_small(self, name: str, default: bytes) -> bytes:
        info = self.entries.get(name)
        if info is None:
            return default
        if info.file_size > 64:
            raise UnsafePickleError(f"{self.what}: record {name} is too large")
        return self.archive.read(info)

    def load(self) -> dict[str, np.ndarray]:
        info = self.entries[f"{self.prefix}data.pkl"]
        if info.file_size > MAX_STATE_PICKLE_BYTES:
            raise UnsafePickleError(f"{self.what}: data.pkl is too large for a state dict")
        unpickler = _StateUnpickler(io.BytesIO(self.archive.read(info)), self)
        try:
            value = unpickler.load()
        except UnsafePickleError:
            raise
        except Exception as error:
            raise UnsafePickleError(
                f"{self.what} is not a readable state dict ({error})"
            ) from error
        if not isinstance(value, dict):
            raise UnsafePickleError(
                f"{self.what} holds a {type(value).__name__}, not a state dict: save "
                "netG.state_dict(), as the SliceGAN code does"
            )
        state: dict[str, np.ndarray] = {}
        for key, tensor in value.items():
            if not isinstance(key, str) or not isinstance(tensor, _Tensor):
                raise UnsafePickleError(f"{self.what}: entry {key!r} is not a tensor")
            state[key] = tensor.array
        return state

    def storage(self, pid: Any) -> np.ndarray:
        """The array of a persistent id ``('storage', StorageType, key, location, numel)``."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"{self.what}: unknown external object {str(pid)[:80]}")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType):
            raise UnsafePickleError(f"{self.what}: storage of unknown type")
        if not (isinstance(key, str) and _STORAGE_KEY.match(key)):
            raise UnsafePickleError(f"{self.what}: bad storage key {str(key)[:80]!r}")
        if key in self.storages:
            return self.storages[key]
        dtype = np.dtype(self.endian + kind.code) if kind.code != "?" else np.dtype("?")
        info = self.entries.get(f"{self.prefix}data/{key}")
        if info is None:
            raise UnsafePickleError(f"{self.what}: storage {key} is missing (truncated file?)")
        if type(numel) is not int or numel < 0 or info.file_size != numel * dtype.itemsize:
            raise UnsafePickleError(
                f"{self.what}: storage {key} has {info.file_size} bytes, not the "
                f"{numel} x {dtype.itemsize} its tensor claims"
            )
        array = np.frombuffer(self.archive.read(info), dtype=dtype)
        self.storages[key] = array
        return array


class _StorageType:
    def __init__(self, code: str) -> None:
        self.code = code


class _Tensor:
    def __init__(self, array: np.ndarray) -> None:
        self.array = array


class _StateUnpickler(pickle.Unpickler):
    """Knows OrderedDict, the storage types and the two tensor-rebuild functions; no more."""

    def __init__(self, file: io.BytesIO, archive: _StateArchive) -> None:
        super().__init__(file)
        self.archive = archive

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        raise UnsafePickleError(
            f"refused: {self.archive.what} wants to load {module}.{name}, which a plain "
            "state dict of tensors never needs"
        )

    def persistent_load(self, pid: Any) -> Any:
        return self.archive.storage(pid)

    def _rebuild_tensor(
        self,
        storage: Any,
        offset: Any,
        size: Any,
        stride: Any,
        requires_grad: Any = False,
        hooks: Any = None,
        metadata: Any = None,
    ) -> _Tensor:
        what = self.archive.what
        self.archive.tensors += 1
        if self.archive.tensors > MAX_TENSORS:
            raise UnsafePickleError(f"{what} has more than {MAX_TENSORS} tensors")
        if not isinstance(storage, np.ndarray):
            raise UnsafePickleError(f"{what}: a tensor without a storage")
        if type(offset) is not int:
            raise UnsafePickleError(f"{what}: a tensor with an impossible offset")
        ints = [offset, *_int_tuple(size, what), *_int_tuple(stride, what)]
        if len(size) != len(stride) or len(size) > MAX_DIMS or any(v < 0 for v in ints):
            raise UnsafePickleError(f"{what}: a tensor with an impossible shape")
        count = 1
        last = offset
        for n, step in zip(size, stride):
            count *= n
            last += (n - 1) * step
        if count and last >= storage.size:
            raise UnsafePickleError(f"{what}: a tensor reaches past the end of its storage")
        if count == 0:
            return _Tensor(np.zeros(size, dtype=storage.dtype.newbyteorder("=")))
        item = storage.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[offset:],
            shape=tuple(size),
            strides=tuple(step * item for step in stride),
            writeable=False,
        )
        # np.array, not ascontiguousarray: that one turns a 0-d tensor into 1-d.
        return _Tensor(np.array(view, dtype=storage.dtype.newbyteorder("="), order="C"))


def _rebuild_parameter(data: Any, requires_grad: Any = False, hooks: Any = None) -> Any:
    """A ``nn.Parameter`` (a state dict saved with ``keep_vars=True``): its tensor."""
    if not isinstance(data, _Tensor):
        raise UnsafePickleError("a parameter without a tensor")
    return data


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or any(type(v) is not int for v in value):
        raise UnsafePickleError(f"{what}: a tensor with an impossible shape")
    return value


__all__: list[str] = [
    "UnsafePickleError",
    "load_int_lists",
    "load_state_dict",
]
