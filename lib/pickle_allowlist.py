"""What the restricted checkpoint unpickler (lib/safe_unpickler.py) may build and call.

Placeholders for classes that are not run (StoredClass, StoredObject), the allow-list of
globals that are called, each with its arguments checked, the modules that run commands, and
PickleRefused, which says why a pickle was refused.
"""
from __future__ import annotations

import collections
import pickle
from typing import Any

import numpy as np
import torch

from lib.printable import printable

try:  # numpy >= 2 keeps the pickle helpers in numpy._core; older files name numpy.core
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray

NAME_LIMIT = 120  # a module or class name from a file is shown up to this many characters
PLAIN_DTYPE_KINDS = "biufcSU"  # bool, ints, floats, complex, bytes, str: no Python objects, no fields

# What a pickle names when it means to run commands or code: refused even with --trust-pickle.
COMMAND_MODULES = frozenset({
    "builtins", "__builtin__", "os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy", "code",
    "codeop", "pty", "socket", "ctypes", "pickle", "_pickle", "marshal", "shelve", "webbrowser", "multiprocessing",
    "operator", "_operator", "functools", "types", "io", "_io", "pdb", "timeit", "signal", "asyncio", "threading",
    "_thread", "platform", "commands", "popen2",
})


class PickleRefused(pickle.UnpicklingError):
    """The pickle would run code that is not allow-listed; nothing of it was run.

    `reason` completes "the file was refused: ..."; `trust_helps` says whether reading it with
    full unpickling (--trust-pickle) would work, for a file whose source is trusted.
    """

    def __init__(self, reason: str, trust_helps: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.trust_helps = trust_helps


class StoredClass:
    """A class or function named in a file, not loaded: only its module and name are kept.

    Calling it raises TypeError (it may be a defaultdict's default_factory): its code is not here.
    """

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise TypeError(f"{self.qualified()} is a placeholder read from a checkpoint; its code is not loaded")

    def qualified(self) -> str:
        """'module.name', safe to print."""
        return printable(f"{self.module}.{self.name}", NAME_LIMIT)

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualified()}>"


class StoredObject:
    """An object of a `StoredClass`, kept as data: what the pickle gave to build it, nothing run.

    `args`/`kwargs`: constructor arguments; `state`: what its __setstate__ (or __dict__) would get;
    `items`/`entries`: what it would have appended / set as items (for list and dict subclasses).
    """

    __slots__ = ("cls", "args", "kwargs", "state", "items", "entries")

    def __init__(self, cls: StoredClass, args: tuple = (), kwargs: dict | None = None) -> None:
        self.cls, self.args, self.kwargs = cls, args, kwargs or {}
        self.state: object = None
        self.items: list = []
        self.entries: dict = {}

    def __repr__(self) -> str:
        return f"<placeholder {self.cls.qualified()} object>"


def _refuse_hooks(hooks: object) -> None:
    if hooks:  # torch.save always writes an empty OrderedDict here
        raise PickleRefused("a tensor carries backward hooks (functions to run later)")


def _check_storage(storage: object) -> None:
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise PickleRefused(f"a tensor is built on a {type(storage).__name__}, not on a storage of the file",
                            trust_helps=False)


def _check_metadata(metadata: object) -> None:
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, bool) for v in metadata.values())):
        raise PickleRefused("a tensor carries metadata other than flags", trust_helps=False)


def _tensor_v1(storage, offset, size, stride):
    _check_storage(storage)
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    _check_storage(storage)
    _refuse_hooks(hooks)
    _check_metadata(metadata)
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, collections.OrderedDict(),
                                           metadata)


def _tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    _check_storage(storage)
    _refuse_hooks(hooks)
    _check_metadata(metadata)
    if not isinstance(dtype, torch.dtype):
        raise PickleRefused(f"a tensor's dtype is a {type(dtype).__name__}", trust_helps=False)
    return torch._utils._rebuild_tensor_v3(storage, offset, size, stride, requires_grad, collections.OrderedDict(),
                                           dtype, metadata)


def _parameter(data, requires_grad, hooks):
    if not isinstance(data, torch.Tensor):
        raise PickleRefused(f"a parameter wraps a {type(data).__name__}, not a tensor", trust_helps=False)
    _refuse_hooks(hooks)
    return torch._utils._rebuild_parameter(data, requires_grad, collections.OrderedDict())


def _check_plain_dtype(dtype: object) -> np.dtype:
    """Numbers, booleans, bytes and str only: a numpy dtype that holds Python objects, fields or
    sub-arrays would let the file's bytes stand for object pointers."""
    if isinstance(dtype, StoredObject):  # its class's module is not here, so --trust-pickle cannot help either
        raise PickleRefused(f"a numpy value's dtype is an object of {dtype.cls.qualified()}, code that is not "
                            f"installed here: the file is damaged, or needs a package this environment lacks",
                            trust_helps=False)
    if not isinstance(dtype, np.dtype) or dtype.kind not in PLAIN_DTYPE_KINDS or dtype.hasobject \
            or dtype.fields is not None or dtype.subdtype is not None:
        raise PickleRefused(f"a numpy value has dtype {printable(dtype, NAME_LIMIT)}, which is not read "
                            f"(only numbers, booleans, bytes and str are)")
    return dtype


def _numpy_dtype(code, align=False, copy=True):
    if not isinstance(code, (str, bytes)):
        raise PickleRefused(f"a numpy dtype is described by a {type(code).__name__}", trust_helps=False)
    # copy=True always: numpy's own dtypes are shared singletons, and BUILD changes the one returned
    return _check_plain_dtype(np.dtype(code, bool(align), True))


def _numpy_reconstruct(subtype, shape, code):
    if subtype is not np.ndarray:
        raise PickleRefused("a numpy array of another array class is built", trust_helps=False)
    return _multiarray._reconstruct(np.ndarray, shape, _numpy_dtype(code))


def _numpy_scalar(dtype, data=None):
    _check_plain_dtype(dtype)
    if not isinstance(data, bytes):
        raise PickleRefused(f"a numpy number is built from a {type(data).__name__}", trust_helps=False)
    return _multiarray.scalar(dtype, data)


def _codecs_encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):  # how protocol 2 writes bytes
        raise PickleRefused("bytes are encoded in an unexpected way", trust_helps=False)
    return text.encode("latin1")


def _defaultdict(factory=None, *items):
    if not (factory is None or isinstance(factory, StoredClass) or factory in (list, dict, int, float, set)):
        raise PickleRefused(f"a defaultdict's default factory is a {type(factory).__name__}", trust_helps=False)
    return collections.defaultdict(factory, *items)


def _allowed() -> dict[str, Any]:
    """'module.name' -> what the unpickler gives for that global; only these are ever called."""
    table: dict[str, Any] = {
        "collections.OrderedDict": collections.OrderedDict,
        "collections.defaultdict": _defaultdict,
        "collections.Counter": collections.Counter,
        "_codecs.encode": _codecs_encode,
        "torch._utils._rebuild_tensor": _tensor_v1,
        "torch._utils._rebuild_tensor_v2": _tensor_v2,
        "torch._utils._rebuild_tensor_v3": _tensor_v3,
        "torch._utils._rebuild_parameter": _parameter,
        "torch.Size": torch.Size,
        "torch.device": torch.device,
        "torch.UntypedStorage": torch.UntypedStorage,  # a marker of untyped storages' persistent ids
        "numpy.dtype": _numpy_dtype,
        "numpy.ndarray": np.ndarray,  # only as _reconstruct's first argument
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # files of numpy 1.x / 2.x
        table[f"{module}._reconstruct"] = _numpy_reconstruct
        table[f"{module}.scalar"] = _numpy_scalar
    for plain in (set, frozenset, complex, bytearray, bytes, list, dict, tuple, int, float, bool, str, slice, range):
        table[f"builtins.{plain.__name__}"] = plain
    for value in vars(torch).values():  # torch.float32 and the other dtypes: values, not callables
        if isinstance(value, torch.dtype):
            table[str(value)] = value
    return table


ALLOWED = _allowed()
NOT_CALLED = ("numpy.ndarray", "torch.UntypedStorage")  # markers that other globals receive, never called
# ALLOWED keeps these objects alive, so their ids stay theirs
_CALLABLE_IDS = frozenset(id(value) for key, value in ALLOWED.items() if key not in NOT_CALLED)
DICT_TYPES = (dict, collections.OrderedDict, collections.defaultdict, collections.Counter)  # SETITEM targets


def may_call(value: object) -> bool:
    return id(value) in _CALLABLE_IDS


def check_dtype_state(dtype: np.dtype, state: object) -> None:
    """A plain dtype's state is (version, byte order, None, None, None, size, alignment, flags[, metadata]);
    its flags must stay the dtype's own (they say whether its bytes are object pointers)."""
    if not (isinstance(state, tuple) and len(state) in (8, 9) and state[2:5] == (None, None, None)
            and state[7] == dtype.flags and (len(state) == 8 or state[8] is None)):
        raise PickleRefused("a numpy dtype has a state other than a plain number's or string's", trust_helps=False)


def check_array_state(state: object) -> None:
    """(version, shape, dtype, is_fortran, raw bytes) of a plain dtype."""
    if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[4], (bytes, bytearray))):
        raise PickleRefused("a numpy array has a state other than raw bytes", trust_helps=False)
    _check_plain_dtype(state[2])
