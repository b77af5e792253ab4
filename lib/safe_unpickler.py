"""Reading checkpoint pickles without running code stored in them.

`torch.load(path, weights_only=False, pickle_module=checkpoint_pickle())` rebuilds tensors,
numpy numbers and arrays, and plain containers. Every other class named in the file becomes an
inert placeholder: a `StoredClass` (its module and name) and, for each object of it, a
`StoredObject` (that reference, its constructor arguments and its state). Placeholders have no
behaviour, so nothing of the file's own code runs. This is how a published checkpoint, whose
`stats` hold `AverageMeter` objects of the published trainer's `lib.utils`, is read.

Only the functions and classes of the allow-list (lib/pickle_allowlist.py, with the
placeholders) are ever called, with checked arguments. A
pickle that would call anything else that exists here (os.system, builtins.eval,
subprocess.Popen, fractions.Fraction, ...) is refused with PickleRefused before it runs: the
objects a pickle builds on the way (the only thing it could call) are allow-listed values,
their results, plain values or placeholders.

`checkpoint_pickle(trusted=True)` (for `--trust-pickle`) resolves classes of installed code
normally and calls them, as full unpickling does; it still refuses the modules that run
commands, and still turns code that is not installed into placeholders.
"""
from __future__ import annotations

import _compat_pickle
import collections
import importlib.machinery
import importlib.util
import pickle
import sys
import types
from typing import Any

import numpy as np

from lib.pickle_allowlist import (ALLOWED, COMMAND_MODULES, DICT_TYPES, NAME_LIMIT, PickleRefused, StoredClass,
                                  StoredObject, check_array_state, check_dtype_state, may_call)
from lib.printable import printable

__all__ = ["PickleRefused", "StoredClass", "StoredObject", "checkpoint_pickle", "installed"]


def installed(module: str) -> bool:
    """Whether `module` could be imported here; found without importing anything new, so no code runs.

    Loaded modules are looked up in sys.modules; a top-level name is searched by the import
    finders (which only look for it); a submodule of a package that is not loaded is searched in
    the package's folders.
    """
    if module in sys.modules:
        return True
    parts = module.split(".")
    if not all(part.isidentifier() for part in parts):
        return False
    search = None
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        loaded = sys.modules.get(name)
        if loaded is not None:
            search = vars(loaded).get("__path__")  # vars(): a module's __getattr__ could run code
        else:
            try:
                spec = (importlib.util.find_spec(name) if depth == 1
                        else importlib.machinery.PathFinder.find_spec(name, search))
            except (ImportError, ValueError):
                return False
            if spec is None:
                return False
            search = spec.submodule_search_locations
        if search is None and depth < len(parts):
            return False  # a plain module (not a package) has no submodules to import
    return True


class RestrictedUnpickler(pickle._Unpickler):
    """pickle's pure-Python unpickler with every opcode that can call, build or change objects checked.

    (The C unpickler cannot be restricted at BUILD, APPEND or SETITEM; checkpoint pickles are small,
    their tensors' data lives in separate records.)
    """

    trusted = False
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:  # names of Python 2 pickles, as pickle maps them
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        key = f"{module}.{name}"
        if key in ALLOWED:  # trusted: the real function, unchecked, as full unpickling does
            return super().find_class(module, name) if self.trusted else ALLOWED[key]
        if module.split(".")[0] in COMMAND_MODULES:
            raise PickleRefused(f"it names {printable(key, NAME_LIMIT)}, which runs commands or code; published "
                                f"checkpoints and this project's files never do", trust_helps=False)
        if self.trusted:
            try:
                return super().find_class(module, name)
            except (ImportError, AttributeError):  # code that is not here: as without trust
                pass
        return StoredClass(module, name)

    def _call(self, func: Any, args: tuple) -> Any:
        if isinstance(func, StoredClass):
            if not self.trusted and installed(func.module):
                raise PickleRefused(f"it would call {func.qualified()}, which is installed here, to rebuild an "
                                    f"entry, and checkpoints are read without running such code")
            return StoredObject(func, args)  # code that is not here: what it was given is kept, nothing runs
        if self.trusted or may_call(func):
            return func(*args)
        raise PickleRefused(f"it would call a {type(func).__name__} object", trust_helps=False)

    def _new(self, cls: Any, args: tuple, kwargs: dict) -> Any:
        if isinstance(cls, StoredClass):
            return StoredObject(cls, args, kwargs)  # cls.__new__ of a class: kept as data, nothing called
        if self.trusted:
            return cls.__new__(cls, *args, **kwargs)
        # the allowed classes pickle as calls (REDUCE); only other classes' objects come this way
        raise PickleRefused(f"it would create an object with {printable(cls, NAME_LIMIT)}.__new__",
                            trust_helps=False)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        if type(args) is not tuple:
            raise pickle.UnpicklingError(f"REDUCE arguments are a {type(args).__name__}, not a tuple")
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, tuple(args), {}))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, tuple(args), dict(kwargs)))

    def _instantiate(self, klass: Any, args: list) -> None:  # INST and OBJ
        if isinstance(klass, StoredClass) and not args:
            self.append(StoredObject(klass))
        else:
            self.append(self._call(klass, tuple(args)))

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, StoredObject):
            inst.state = state
        elif self.trusted:
            self.append(state)
            super().load_build()
        elif type(inst) is collections.OrderedDict and isinstance(state, dict) and all(type(k) is str for k in state):
            inst.__dict__.update(state)  # a state dict's _metadata
        elif isinstance(inst, np.dtype):
            check_dtype_state(inst, state)
            inst.__setstate__(state)
        elif type(inst) is np.ndarray:
            check_array_state(state)
            inst.__setstate__(state)
        else:
            raise PickleRefused(f"it would set the state of a {type(inst).__name__} object", trust_helps=False)

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._set_items(self.stack[-1], [key, value])

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._set_items(self.stack[-1], items)

    def _set_items(self, target: Any, items: list) -> None:
        if isinstance(target, StoredObject):
            target = target.entries
        elif not (self.trusted or type(target) in DICT_TYPES):
            raise PickleRefused(f"it would set items of a {type(target).__name__} object", trust_helps=False)
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def load_append(self) -> None:
        value = self.stack.pop()
        self._append_items(self.stack[-1], [value])

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._append_items(self.stack[-1], items)

    def _append_items(self, target: Any, items: list) -> None:
        if isinstance(target, StoredObject):
            target.items.extend(items)
        elif type(target) is list:
            target.extend(items)
        elif self.trusted:
            for item in items:
                target.append(item)
        else:
            raise PickleRefused(f"it would append to a {type(target).__name__} object", trust_helps=False)

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if not isinstance(target, set):
            raise PickleRefused(f"it would add items to a {type(target).__name__} object", trust_helps=False)
        target.update(items)

    def load_ext(self) -> None:
        raise PickleRefused("it uses pickle extension codes, which torch.save never writes", trust_helps=False)

    for _opcode, _method in ((pickle.REDUCE, load_reduce), (pickle.NEWOBJ, load_newobj),
                             (pickle.NEWOBJ_EX, load_newobj_ex), (pickle.BUILD, load_build),
                             (pickle.SETITEM, load_setitem), (pickle.SETITEMS, load_setitems),
                             (pickle.APPEND, load_append), (pickle.APPENDS, load_appends),
                             (pickle.ADDITEMS, load_additems), (pickle.EXT1, load_ext), (pickle.EXT2, load_ext),
                             (pickle.EXT4, load_ext)):
        dispatch[_opcode[0]] = _method
    del _opcode, _method


class TrustingUnpickler(RestrictedUnpickler):
    """Full unpickling of installed code (--trust-pickle), still without the command-running modules."""

    trusted = True


def checkpoint_pickle(trusted: bool = False) -> types.SimpleNamespace:
    """A `pickle_module` for torch.load: Unpickler and load of the restricted (or trusting) unpickler."""
    unpickler = TrustingUnpickler if trusted else RestrictedUnpickler

    def load(file, **kwargs) -> Any:  # torch reads a legacy file's header with pickle_module.load
        return unpickler(file, **kwargs).load()

    return types.SimpleNamespace(__name__=__name__, Unpickler=unpickler, load=load,
                                 UnpicklingError=pickle.UnpicklingError)

