"""What a function computes, for a run's identity: a fingerprint of its code, and which functions
passed an exercise's checker.

A method records each function it was given (`Method.functions`: a student's loss, the library's
MoCo step...) in its run's configuration as `function_record(fn)`:

    {"name": "__main__.info_nce_loss", "code": "3fa2c1d09b7e4f10",
     "checked": ["clcourse.losses.info_nce"]}

`code` is `code_fingerprint(fn)`: a hash of the function's bytecode and constants, its defaults,
what its closure holds and the global values it reads, and, recursively, of every function among
those (a helper defined in another cell, a function it closes over). Two functions with the same
fingerprint compute the same thing; editing a function, or a helper it calls, changes it (comments
and formatting do not). Functions of installed libraries (torch, numpy) count by name. The bytecode
is Python's own, so a run moved to another Python version counts as made with another function.

`checked` names the library function whose exercise checker this very code passed in this session
(`mark_checked`, called by `clcourse.checks`): such a function stands in for that library function
when a run is looked up (`clcourse.runs`)."""
from __future__ import annotations

import functools
import hashlib
import inspect
import sysconfig
import types
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["code_fingerprint", "function_record", "function_name", "mark_checked",
           "checked_against", "is_library_function"]

_PACKAGE = Path(__file__).resolve().parent
# Where installed code lives: its functions are identified by name (their code is the installed
# version's), not hashed.
_INSTALLED = tuple(str(Path(p).resolve()) for p in {sysconfig.get_paths()[key] for key in
                                                    ("stdlib", "platstdlib", "purelib", "platlib")}
                   if p)
# Tensors larger than this count by shape and dtype only (hashing them would cost more than a
# training step).
_LARGEST_HASHED_TENSOR = 1 << 20
# fingerprint -> the library functions that code passed the checker of, this session.
_CHECKED: dict[str, set[str]] = {}


def function_name(fn) -> str:
    """`module.qualname` of a function (of the function a partial or a bound method calls)."""
    fn = _unwrap(fn)
    if hasattr(fn, "__qualname__"):
        return f"{getattr(fn, '__module__', None) or '?'}.{fn.__qualname__}"
    return f"{type(fn).__module__}.{type(fn).__qualname__}"


def _unwrap(fn):
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn.__func__ if inspect.ismethod(fn) else fn


def is_library_function(fn) -> bool:
    """Whether `fn` is one of clcourse's own functions (not a student's, not another library's)."""
    fn = _unwrap(fn)
    return (isinstance(fn, types.FunctionType)
            and (getattr(fn, "__module__", "") or "").split(".")[0] == "clcourse")


def _installed(fn: types.FunctionType) -> bool:
    """A function of an installed library other than clcourse (torch, numpy, the standard
    library), identified by name."""
    if (fn.__module__ or "").split(".")[0] == "clcourse":
        return False
    filename = fn.__code__.co_filename
    return filename.startswith("<frozen") or filename.startswith(_INSTALLED)


class _Hasher:
    def __init__(self):
        self.digest = hashlib.sha256()
        self.seen: dict[int, int] = {}   # id of a function already hashed -> its position

    def put(self, *parts) -> None:
        for part in parts:
            self.digest.update(part if isinstance(part, bytes) else repr(part).encode())
            self.digest.update(b"\x00")

    def code(self, code: types.CodeType) -> None:
        self.put("code", code.co_argcount, code.co_kwonlyargcount, code.co_flags, code.co_code,
                 code.co_names)
        for constant in code.co_consts:
            if isinstance(constant, types.CodeType):
                self.code(constant)
            else:
                self.put(type(constant).__name__, constant)

    def function(self, fn: types.FunctionType) -> None:
        if id(fn) in self.seen:   # recursion, or a helper reached twice
            self.put("seen", self.seen[id(fn)])
            return
        self.seen[id(fn)] = len(self.seen)
        if _installed(fn):
            self.put("installed", fn.__module__, fn.__qualname__)
            return
        self.code(fn.__code__)
        self.value(fn.__defaults__)
        self.value(fn.__kwdefaults__)
        for cell in fn.__closure__ or ():
            try:
                self.value(cell.cell_contents)
            except ValueError:   # a cell not filled yet
                self.put("empty cell")
        for name in sorted(_global_names(fn.__code__)):
            if name in fn.__globals__:
                self.put("global", name)
                self.value(fn.__globals__[name])

    def value(self, value) -> None:
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
            self.put(type(value).__name__, value)
        elif isinstance(value, (tuple, list)):
            self.put(type(value).__name__, len(value))
            for item in value:
                self.value(item)
        elif isinstance(value, dict):
            self.put("dict", len(value))
            for key in sorted(value, key=repr):
                self.put(repr(key))
                self.value(value[key])
        elif isinstance(value, types.ModuleType):
            self.put("module", value.__name__)
        elif isinstance(value, torch.Tensor):
            self.put("tensor", tuple(value.shape), str(value.dtype))
            if value.numel() <= _LARGEST_HASHED_TENSOR and value.layout == torch.strided:
                self.put(value.detach().cpu().contiguous().view(-1).view(torch.uint8)
                         .numpy().tobytes())
        elif isinstance(value, functools.partial):
            self.put("partial")
            self.value(value.func)
            self.value(value.args)
            self.value(value.keywords)
        elif inspect.ismethod(value):
            self.put("method", type(value.__self__).__qualname__)
            self.value(value.__func__)
        elif isinstance(value, types.FunctionType):
            self.function(value)
        elif isinstance(value, type):
            self.put("class", value.__module__, value.__qualname__)
        else:   # another object (a module, a recipe): its class, and its __call__ if it is Python
            kind = type(value)
            self.put("object", kind.__module__, kind.__qualname__)
            call = vars(kind).get("__call__")
            if isinstance(call, types.FunctionType):
                self.function(call)


def _global_names(code: types.CodeType) -> set[str]:
    """The names a code object (and the code nested in it) may read as globals."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names


def code_fingerprint(fn: Callable) -> str:
    """16 hex digits that change when what `fn` computes may change: its bytecode and constants,
    defaults, closure and the global values it reads, recursively through the functions among
    them (see the module's docstring)."""
    hasher = _Hasher()
    hasher.value(fn)
    return hasher.digest.hexdigest()[:16]


def mark_checked(fn: Callable, library_function: Callable) -> None:
    """Record that `fn`, as its code is now, passed the exercise checker of `library_function`."""
    _CHECKED.setdefault(code_fingerprint(fn), set()).add(function_name(library_function))


def checked_against(fn: Callable) -> list[str]:
    """The library functions whose checker `fn`, as its code is now, passed in this session."""
    return sorted(_CHECKED.get(code_fingerprint(fn), ()))


def function_record(fn: Callable | None) -> dict | None:
    """How a run's configuration records the function `fn` (None: none given): its name, its code
    fingerprint and, when it passed the checker of a library function this session, that
    function's name."""
    if fn is None:
        return None
    code = code_fingerprint(fn)
    record = {"name": function_name(fn), "code": code}
    checked = sorted(_CHECKED.get(code, ()))
    if checked:
        record["checked"] = checked
    return record

