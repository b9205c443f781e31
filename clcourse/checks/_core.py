"""The machinery every exercise checker uses: run the student's function and the reference on seeded
inputs, and when they disagree, find which known mistake the student's output matches.

Every checker is an `exercise`: while it runs, the package's reference implementations (the
losses, attacks, CKA, MoCo's step...) and the checkers' own references answer only the checker.
Called from the student's code, whatever name or module path it used (an import at the top of the
notebook, a module attribute, a copy of the function object), they fail the check with "write it
yourself: this calls clcourse's <name>" (`Tripwire`). A failing check raises an ExerciseError whose
message is all a notebook shows (`install_ipython_handler`): no traceback through the checker's
source, where its references are.
"""
from __future__ import annotations

import contextlib
import functools
import re
import sys
import sysconfig
import threading
import traceback
import types
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ..identity import mark_checked

__all__ = ["ExerciseError", "exercise", "seeded", "call_student", "as_tensor", "same", "diagnose",
           "passed", "install_ipython_handler", "Tripwire", "tripwire", "reference_codes",
           "short_name", "student_error"]


class ExerciseError(AssertionError):
    """The student's function disagrees with the reference; the message says where to look."""


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- the references, out of reach

_PACKAGE = Path(__file__).resolve().parent.parent
_CHECKS = Path(__file__).resolve().parent
# Where installed code lives (the standard library, site-packages): library code, like clcourse's.
_INSTALLED = tuple(sorted({str(Path(p).resolve()) for p in
                           [sysconfig.get_paths()[key]
                            for key in ("stdlib", "platstdlib", "purelib", "platlib")]
                           + [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
                           if p}))
# The modules whose functions are references: every function in them (module-level, in a class,
# nested) answers only a checker while one runs. clcourse.methods contributes its module-level
# functions only (MoCo's step, the queue, the momentum update, CLAE's objective): a method's own
# methods (encode, the encoders) are tools an exercise may use.
REFERENCE_MODULES = ("losses", "evaluate", "negatives", "attacks", "cka", "robustness",
                     "diagnostics", "checks")
FUNCTIONS_ONLY_MODULES = ("methods",)


class _ReferenceCalled(BaseException):
    """Raised into the student's code where it calls a reference (a BaseException, so that an
    `except Exception` around the call does not hide it)."""


def _code_objects(code: types.CodeType):
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_objects(constant)


def _functions_of(obj):
    """The plain functions behind `obj`: a function, a static or class method, a property's
    accessors."""
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        return [f for f in (obj.fget, obj.fset, obj.fdel) if isinstance(f, types.FunctionType)]
    return [obj] if isinstance(obj, types.FunctionType) else []


def _reference_modules() -> list[types.ModuleType]:
    # not this module: its machinery is not a reference
    return [module for name, module in list(sys.modules.items())
            if name.split(".")[0] == "clcourse" and len(name.split(".")) > 1
            and name.split(".")[1] in REFERENCE_MODULES + FUNCTIONS_ONLY_MODULES
            and name != __name__]


def reference_codes(modules: list[types.ModuleType] | None = None) -> dict[int, tuple]:
    """Every code object of the reference modules (see REFERENCE_MODULES), by id: (the code
    object, the name of the function it belongs to, `clcourse.losses.info_nce`)."""
    codes: dict[int, tuple] = {}
    for module in _reference_modules() if modules is None else modules:
        with_classes = module.__name__.split(".")[1] in REFERENCE_MODULES
        for value in list(vars(module).values()):
            functions = [value] if isinstance(value, types.FunctionType) else []
            if (with_classes and isinstance(value, type)
                    and value.__module__ == module.__name__):
                functions = [f for attribute in vars(value).values()
                             for f in _functions_of(attribute)]
            for function in functions:
                if function.__module__ != module.__name__:
                    continue   # imported from elsewhere: listed under its own module
                name = f"{function.__module__}.{function.__qualname__}"
                for code in _code_objects(function.__code__):
                    codes.setdefault(id(code), (code, name))
    return codes


_CACHE: dict[tuple, dict] = {}


def _cached_reference_codes() -> dict[int, tuple]:
    """reference_codes(), computed again only when another clcourse module was imported."""
    modules = _reference_modules()
    key = tuple(sorted(module.__name__ for module in modules))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = reference_codes(modules)
    return _CACHE[key]


def _callable_codes(values: Iterable) -> set[int]:
    """The code objects behind the callables among `values` (functions, bound methods, partials):
    what a checker hands the student's function may be called by it."""
    codes = set()
    for value in values:
        while isinstance(value, functools.partial):
            value = value.func
        if isinstance(value, types.MethodType):
            value = value.__func__
        if isinstance(value, types.FunctionType):
            codes.update(id(code) for code in _code_objects(value.__code__))
    return codes


def _is_checker_code(code: types.CodeType) -> bool:
    return code.co_filename.startswith(str(_CHECKS))


def _is_library_code(code: types.CodeType) -> bool:
    filename = code.co_filename
    return (filename.startswith(str(_PACKAGE)) or filename.startswith("<frozen")
            or filename.startswith(_INSTALLED))


def short_name(name: str) -> str:
    """`clcourse.losses.info_nce` -> `info_nce`, as a student would have imported it."""
    return name.rsplit(".", 1)[-1] if "<locals>" not in name else name.split(".<locals>")[0]


class Tripwire:
    """While active (a context manager), a reference called from the student's code (see the
    module's docstring) raises into it, and `hit` names the reference; the check then fails.

    It watches every Python call with `sys.setprofile` (chained to a profiler already set), and
    looks only at calls of reference code: it walks up the caller's frames to the first that is
    not library code. A checker's frame is allowed to call references; a student's frame (a
    notebook cell, a script) is not, unless the function called, or one below it on the stack,
    is `allowed` (a callable the checker handed the student, or a function the exercise may use,
    such as InfoNCE in threat model I's objective). `call_student` counts as the student's frame,
    so that the student's function cannot be a reference itself, wrapped in a partial."""

    def __init__(self, references: dict[int, tuple], allowed: Iterable = ()):
        self.references = references
        self.allowed = _callable_codes(allowed)
        self._kept = list(allowed)   # so that the ids in `allowed` stay theirs
        self.hit: str | None = None
        self._thread = threading.get_ident()
        self._previous = None

    def allow(self, values: Iterable) -> None:
        values = list(values)
        self._kept += values
        self.allowed |= _callable_codes(values)

    def _caller_is_student(self, frame) -> bool:
        if id(frame.f_code) in self.allowed:
            return False
        caller = frame.f_back
        while caller is not None:
            code = caller.f_code
            if id(code) in self.allowed:
                return False
            if code is call_student.__code__:
                return True
            if _is_checker_code(code):
                return False
            if not _is_library_code(code):
                return True
            caller = caller.f_back
        return False

    def _profile(self, frame, event, arg):
        if self._previous is not None:
            self._previous(frame, event, arg)
        if event != "call" or id(frame.f_code) not in self.references:
            return
        if self._caller_is_student(frame):
            self.hit = self.hit or self.references[id(frame.f_code)][1]
            raise _ReferenceCalled(self.hit)

    def __enter__(self) -> Tripwire:
        self._previous = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc) -> None:
        sys.setprofile(self._previous)

    def fail_if_hit(self, name: str) -> None:
        if self.hit is not None:
            raise ExerciseError(f"write it yourself: {name} calls clcourse's "
                                f"{short_name(self.hit)} ({self.hit}), which this exercise may "
                                "not use.")


_STATE = threading.local()   # the tripwire and naming of the check running in this thread, if any


def _active() -> Tripwire | None:
    return getattr(_STATE, "tripwire", None)


class _Naming:
    """A check's messages call the student's function by the name the student gave it
    (`info_nce_loss`), not by the checker's name for the exercise (`info_nce`). The checker's
    names are those it passes to `call_student` with the student's function; a reference named in
    a tripwire's message ("clcourse's info_nce (clcourse.losses.info_nce)") keeps its name."""

    def __init__(self, fn: Callable):
        self.function = _unwrapped(fn)
        name = getattr(self.function, "__name__", None)
        # a lambda ("<lambda>") or a callable object without a name keeps the checker's names
        self.student = name if isinstance(name, str) and name.isidentifier() else None
        self.names: set[str] = set()

    def register(self, fn: Callable, name: str) -> None:
        if _unwrapped(fn) is self.function:
            self.names.add(name)

    def __call__(self, text: str) -> str:
        if self.student is None:
            return text
        for name in sorted(self.names, key=len, reverse=True):
            text = re.sub(rf"(?<!clcourse's )(?<![\w.]){re.escape(name)}(?!\w)", self.student,
                          text)
        return text


def _naming() -> _Naming | None:
    return getattr(_STATE, "naming", None)


@contextlib.contextmanager
def _check_naming(fn: Callable):
    """The naming of one check (`_Naming`); a checker called by another keeps the outer one."""
    if _naming() is not None:
        yield _naming()
        return
    _STATE.naming = _Naming(fn)
    try:
        yield _STATE.naming
    finally:
        _STATE.naming = None


@contextlib.contextmanager
def tripwire(references: dict | None = None, allowed: Iterable = ()):
    """The tripwire of one check: a new one, or the check's already running (a checker calling
    another, or a hidden test around a checker), which then also allows `allowed`."""
    running = _active()
    if running is not None:
        running.allow(allowed)
        yield running
        return
    wire = Tripwire(references if references is not None else _cached_reference_codes(), allowed)
    _STATE.tripwire = wire
    try:
        with wire:
            yield wire
    finally:
        _STATE.tripwire = None


def _student_frames(error: BaseException) -> str:
    """The traceback of `error` in the student's own code (the checker's frames left out)."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if not frame.filename.startswith(str(_CHECKS))]
    return "".join(traceback.format_list(frames)).rstrip()


def student_error(name: str, error: Exception) -> ExerciseError:
    """The ExerciseError for an error the student's function `name` raised: its type, its message
    and the student's own lines of the traceback."""
    where = _student_frames(error)
    return ExerciseError(f"{name} raised {type(error).__name__}: {error}"
                         + (f"\n{where}" if where else ""))


def call_student(fn: Callable, *args, name: str, raising: tuple[type[Exception], ...] = ()):
    """fn(*args) under the check's tripwire, the callables among `args` allowed. Not implemented
    yet, a reference called, or an error raised by the student's code: an ExerciseError that says
    so (`student_error`), except errors of the types in `raising`, which the checker explains."""
    wire = _active()
    if wire is not None:
        wire.allow(args)
    naming = _naming()
    if naming is not None:
        naming.register(fn, name)
    try:
        result = fn(*args)
    except NotImplementedError:
        raise ExerciseError(f"{name} is not implemented yet: replace `raise "
                            "NotImplementedError` with your code.") from None
    except _ReferenceCalled:
        result = None
    except Exception as error:
        # unless the student's code caught the tripwire's exception and raised another
        if wire is None or wire.hit is None:
            if isinstance(error, raising):
                raise
            raise student_error(name, error) from error
        result = None
    if wire is not None:
        wire.fail_if_hit(name)
    return result


def exercise(stands_for: Callable | None = None, allowed: tuple[Callable, ...] = ()):
    """Make `checker(fn, ...)` an exercise's checker: it runs under a tripwire (the references
    answer only the checker; the functions in `allowed` the student may call), the student's
    function may not be a reference itself, an error the checker's own code raises on what the
    student's function returned becomes an ExerciseError, and a function that passes is recorded
    as standing for `stands_for` (the library function a run may then be made with instead,
    `clcourse.identity`)."""
    def decorate(checker):
        @functools.wraps(checker)
        def check(fn, *args, **kwargs):
            exercise_name = checker.__name__.removeprefix("check_")
            if not callable(fn):
                raise ExerciseError(f"{checker.__name__} takes your function itself (the name you "
                                    f"defined it with, without parentheses), got {fn!r}.")
            with tripwire(allowed=allowed) as wire, _check_naming(fn) as names:
                exercise_name = names.student or exercise_name
                named = wire.references.get(id(getattr(_unwrapped(fn), "__code__", None)))
                if named is not None:
                    named = named[1]
                    raise ExerciseError(f"write it yourself: the function checked is clcourse's "
                                        f"{short_name(named)} ({named}), the reference itself.")
                try:
                    checker(fn, *args, **kwargs)
                except ExerciseError as error:
                    error.args = (names(str(error)),)
                    raise
                except _ReferenceCalled:
                    wire.fail_if_hit(exercise_name)
                except Exception as error:
                    wire.fail_if_hit(exercise_name)
                    raise ExerciseError(
                        f"{checker.__name__} could not use what your function returned "
                        f"({type(error).__name__}: {error}).") from error
                wire.fail_if_hit(exercise_name)
            if stands_for is not None:
                mark_checked(fn, stands_for)
        check.stands_for = stands_for
        return check
    return decorate


def _unwrapped(fn):
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn.__func__ if isinstance(fn, types.MethodType) else fn


# ---------------------------------------------------------------- comparing outputs

def as_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ExerciseError(f"{name} must return a torch.Tensor, got {type(value).__name__}.")
    return value


def same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    return a.shape == b.shape and torch.allclose(a.detach().double(), b.detach().double(),
                                                 atol=atol, rtol=rtol)


def diagnose(name: str, student: torch.Tensor, reference: torch.Tensor,
             mistakes: dict[str, torch.Tensor], context: str = "") -> None:
    """Raise an ExerciseError that names the first known mistake the student's output matches,
    else a generic message with both values. `mistakes` maps a hint to the output that mistake
    would produce."""
    if same(student, reference):
        return
    where = f" ({context})" if context else ""
    if student.shape != reference.shape:
        raise ExerciseError(f"{name}{where} returned shape {tuple(student.shape)}, expected "
                            f"{tuple(reference.shape)}.")
    for hint, wrong_output in mistakes.items():
        if same(student, wrong_output):
            raise ExerciseError(f"{name}{where} is not right yet. {hint}")
    shown = (f"got {student.item():.6f}, expected {reference.item():.6f}" if student.numel() == 1
             else "largest difference "
                  f"{(student.detach().double() - reference.double()).abs().max().item():.3g}")
    raise ExerciseError(f"{name}{where} does not match the reference: {shown}.")


def passed(name: str, what: str) -> None:
    names = _naming()
    print(f"✓ {names(name) if names is not None else name}: {what}")


# ---------------------------------------------------------------- in a notebook

def _show_exercise_error(shell, etype, value, tb, tb_offset=None) -> list[str]:
    """IPython's handler for an ExerciseError: its message, without the traceback (whose frames
    would show the checker's source around each line, references included). Shown the way
    IPython shows any error (in a kernel, an error output: nbgrader and nbval see the cell fail)."""
    shown = [f"\x1b[0;31m{etype.__name__}\x1b[0m: {value}"]
    shell._showtraceback(etype, value, shown)
    return shown


def install_ipython_handler() -> bool:
    """In IPython (a Jupyter kernel), show a failing check as its message alone: called when
    clcourse.checks is imported. Returns whether it was installed."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return False
    shell.set_custom_exc((ExerciseError,), _show_exercise_error)
    return True
