"""PyTorch checkpoints (`torch.save` files) read into numpy arrays without importing torch.

Both formats `torch.save` has written are read: the zip archive (torch >= 1.6: `<prefix>/data.pkl` and one
`<prefix>/data/<key>` member per storage) and the legacy stream (a magic-number pickle, the object pickle, the list
of storage keys, then each storage as an int64 element count and its bytes). The object pickle is unpickled with a
restricted unpickler: only tensor rebuilding, storage types, dtypes and `OrderedDict` are known, any other global
(a class, `os.system`, ...) is refused, so loading a checkpoint never runs code from it. Tensors become numpy arrays
of the same dtype, shape and strides (bfloat16 widened to float32); views share nothing with each other.

`load(path)` returns the checkpoint's top-level object with every tensor replaced by an array;
`state_dict(path, key)` returns the flat `name -> array` mapping a converter wants.
"""

from __future__ import annotations

import collections
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from appliance.modelstore.manifest import ModelError

__all__ = ["load", "state_dict"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
CHUNK = 16 << 20  # bytes read at a time into a storage's buffer


@dataclass(frozen=True)
class _Kind:
    """A torch element type: how its bytes are stored and how they are read."""

    name: str
    raw: np.dtype
    bfloat16: bool = False


_KINDS = {name: _Kind(name, np.dtype(raw), name == "BFloat16") for name, raw in (
    ("Double", "<f8"), ("Float", "<f4"), ("Half", "<f2"), ("BFloat16", "<u2"), ("Long", "<i8"), ("Int", "<i4"),
    ("Short", "<i2"), ("Char", "<i1"), ("Byte", "<u1"), ("Bool", "?"), ("ComplexFloat", "<c8"),
    ("ComplexDouble", "<c16"))}
_UNTYPED = _Kind("Untyped", np.dtype("<u1"))
_DTYPE_NAMES = {"float64": "Double", "double": "Double", "float32": "Float", "float": "Float", "float16": "Half",
                "half": "Half", "bfloat16": "BFloat16", "int64": "Long", "long": "Long", "int32": "Int",
                "int": "Int", "int16": "Short", "short": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool",
                "complex64": "ComplexFloat", "complex128": "ComplexDouble"}


@dataclass(frozen=True)
class _Storage:
    """A reference to `numel` elements of one stored buffer, from `byte_offset` (legacy storage views)."""

    key: str
    kind: _Kind
    numel: int
    byte_offset: int = 0


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


class _TensorType:
    """Stands for `torch.Tensor` / `torch.nn.Parameter` where a pickle names the class of a tensor it rebuilds."""


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _Tensor:
    """`torch._utils._rebuild_tensor(_v2)`: requires_grad, backward hooks and metadata do not matter here."""
    if not isinstance(storage, _Storage):
        raise ModelError(f"a tensor is rebuilt from {type(storage).__name__}, not from a storage")
    size, stride = tuple(size), tuple(stride)
    if not all(isinstance(v, int) and v >= 0 for v in (storage_offset, *size, *stride)) or len(size) != len(stride):
        raise ModelError(f"a tensor has an invalid layout: offset {storage_offset}, size {size}, stride {stride}")
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


def _rebuild_from_type(func, new_type, args, _state):
    """`torch._tensor._rebuild_from_type_v2`, for plain tensors and parameters only."""
    if new_type is not _TensorType or func not in (_rebuild_tensor, _rebuild_parameter):
        raise ModelError("a tensor of a subclass of torch.Tensor is refused")
    return func(*args)


_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch", "Tensor"): _TensorType,
    ("torch._tensor", "Tensor"): _TensorType,
    ("torch.nn.parameter", "Parameter"): _TensorType,
    ("torch", "Size"): tuple,
    ("torch", "UntypedStorage"): _UNTYPED,
    ("torch.storage", "UntypedStorage"): _UNTYPED,
    **{("torch", f"{name}Storage"): kind for name, kind in _KINDS.items()},
    **{("torch", dtype): _KINDS[name] for dtype, name in _DTYPE_NAMES.items()},
}


class _Unpickler(pickle.Unpickler):
    """Knows only `_GLOBALS`; collects the storages the pickle refers to by persistent id."""

    def __init__(self, file: BinaryIO):
        super().__init__(file, encoding="utf-8")
        self.storages: dict[str, _Storage] = {}  # root key -> the root storage

    def find_class(self, module: str, name: str):
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise ModelError(f"the checkpoint names {module}.{name}, which a safe load refuses "
                             "(only tensors, storages, dtypes and OrderedDict are read)") from None

    def persistent_load(self, pid):
        """('storage', type, key, location, numel) in zip archives; legacy ones add (view key, offset, numel)."""
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] in ("storage", b"storage")):
            raise ModelError(f"unknown persistent id {str(pid)[:80]} (only storages are read)")
        kind, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(kind, _Kind) or not isinstance(numel, int) or numel < 0:
            raise ModelError(f"invalid storage reference {str(pid)[:80]}")
        root = self.storages.setdefault(key, _Storage(key, kind, numel))
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return root if root.kind == kind else _Storage(key, kind, numel)
        _view_key, offset, view_numel = view
        return _Storage(key, kind, view_numel, offset * kind.raw.itemsize)


def _unpickle(file: BinaryIO, where: str) -> tuple[Any, dict[str, _Storage]]:
    unpickler = _Unpickler(file)
    try:
        return unpickler.load(), unpickler.storages
    except ModelError as e:
        raise ModelError(f"{where}: {e}") from None
    except Exception as e:  # a corrupt or hostile pickle: report it as this checkpoint's problem
        raise ModelError(f"{where}: cannot read the checkpoint's pickle: {type(e).__name__}: {e}") from e


def _read_exactly(file: BinaryIO, nbytes: int, where: str) -> np.ndarray:
    buffer = np.empty(nbytes, np.uint8)
    view, done = memoryview(buffer), 0
    while done < nbytes:
        got = file.readinto(view[done:done + CHUNK])
        if not got:
            raise ModelError(f"{where}: truncated ({done} of {nbytes} bytes)")
        done += got
    return buffer


def _load_zip(path: Path) -> tuple[Any, dict[str, np.ndarray], str]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ModelError(f"{path}: a zip archive but not a torch.save checkpoint (no <name>/data.pkl)")
        prefix = pickles[0][:-len("data.pkl")]
        with archive.open(pickles[0]) as file:
            top, storages = _unpickle(file, str(path))
        names = set(archive.namelist())
        order = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        buffers = {}
        for key in storages:
            member = f"{prefix}data/{key}"
            if member not in names:
                raise ModelError(f"{path}: storage {member} is missing")
            with archive.open(member) as file:
                buffers[key] = _read_exactly(file, archive.getinfo(member).file_size, f"{path}:{member}")
    return top, buffers, order


def _load_legacy(path: Path) -> tuple[Any, dict[str, np.ndarray], str]:
    with open(path, "rb") as file:
        try:
            magic, protocol, sys_info = (_unpickle(file, str(path))[0] for _ in range(3))
        except ModelError:
            magic, protocol, sys_info = None, None, {}
        if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL or not isinstance(sys_info, dict):
            old = " (the tar format of torch < 0.4 is not read: load and save it again with torch)"
            raise ModelError(f"{path}: not a torch.save checkpoint{old if tarfile.is_tarfile(path) else ''}")
        order = "little" if sys_info.get("little_endian", True) else "big"
        top, storages = _unpickle(file, str(path))
        keys, _ = _unpickle(file, str(path))
        if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
            raise ModelError(f"{path}: the stored storage keys do not match the ones the tensors use")
        buffers = {}
        for key in map(str, keys):
            count = int.from_bytes(_read_exactly(file, 8, str(path)).tobytes(), order, signed=True)
            buffers[key] = _read_exactly(file, count * storages[key].kind.raw.itemsize, f"{path}: storage {key}")
    return top, buffers, order


def _array(tensor: _Tensor, buffers: dict[str, np.ndarray], order: str, shared: bool) -> np.ndarray:
    """The tensor's elements, copied out of its storage unless it is the whole of a storage nothing else uses."""
    storage, kind = tensor.storage, tensor.storage.kind
    raw = kind.raw.newbyteorder(">") if order == "big" else kind.raw
    itemsize = raw.itemsize
    end = storage.byte_offset + storage.numel * itemsize
    buffer = buffers[storage.key]
    if end > buffer.size:
        raise ModelError(f"storage {storage.key} holds {buffer.size} bytes, a tensor needs {end}")
    flat = buffer[storage.byte_offset:end].view(raw)
    if 0 in tensor.size:
        values = np.zeros(tensor.size, raw)
    else:
        last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
        if last >= storage.numel:
            raise ModelError(f"a tensor of storage {storage.key} reaches element {last} of {storage.numel}")
        values = np.lib.stride_tricks.as_strided(flat[tensor.offset:], tensor.size,
                                                 [s * itemsize for s in tensor.stride], writeable=False)
        whole = values.flags.c_contiguous and tensor.offset == 0 and values.nbytes == buffer.size
        values = flat.reshape(tensor.size) if whole and not shared else values.copy()
    if kind.bfloat16:
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(raw.newbyteorder("=")) if order == "big" else values


def _count_uses(obj: Any, uses: collections.Counter) -> None:
    if isinstance(obj, _Tensor):
        uses[obj.storage.key] += 1
    elif isinstance(obj, dict):
        for value in obj.values():
            _count_uses(value, uses)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _count_uses(value, uses)


def _resolve(obj: Any, make) -> Any:
    if isinstance(obj, _Tensor):
        return make(obj)
    if isinstance(obj, dict):
        return {key: _resolve(value, make) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_resolve(value, make) for value in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(value, make) for value in obj)
    return obj


def load(path: str | Path) -> Any:
    """The checkpoint's top-level object (usually a dict) with each tensor replaced by a numpy array."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint")
    top, buffers, order = (_load_zip if zipfile.is_zipfile(path) else _load_legacy)(path)
    if order not in ("little", "big"):
        raise ModelError(f"{path}: unknown byte order {order!r}")
    uses: collections.Counter = collections.Counter()
    _count_uses(top, uses)
    try:
        return _resolve(top, lambda t: _array(t, buffers, order, uses[t.storage.key] > 1))
    except ModelError as e:
        raise ModelError(f"{path}: {e}") from None


def _flatten(obj: dict, prefix: str, out: dict[str, np.ndarray]) -> None:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, np.ndarray):
            out[name] = value
        elif isinstance(value, dict):
            _flatten(value, name + ".", out)


def state_dict(path: str | Path, key: str | None = None) -> dict[str, np.ndarray]:
    """`name -> array` for every tensor of the checkpoint, or of its entry `key` (e.g. "model_state"); tensors in
    nested dicts are named with dots ("encoder.conv1.weight"), anything that is not a tensor is left out."""
    top = load(path)
    if key is not None:
        if not isinstance(top, dict) or key not in top:
            have = sorted(map(str, top)) if isinstance(top, dict) else type(top).__name__
            raise ModelError(f"{path}: no entry {key!r} in the checkpoint (it has {have})")
        top = top[key]
    if not isinstance(top, dict):
        raise ModelError(f"{path}: the checkpoint{f' entry {key!r}' if key else ''} is a {type(top).__name__}, "
                         "not a dict of tensors")
    out: dict[str, np.ndarray] = {}
    _flatten(top, "", out)
    if not out:
        raise ModelError(f"{path}: no tensors in the checkpoint{f' entry {key!r}' if key else ''}")
    return out
