"""Everything knowrec raises on purpose is a :class:`knowrec.errors.KnowrecError`.

The walker reads every ``.py`` file of the package with :mod:`ast` and flags each ``raise`` of a built-in
exception class (``ValueError``, ``RuntimeError``, ``KeyError``, ``TypeError``, ``IndexError``, ``Exception``,
``OSError``, ...), with these exceptions:

- inside a pydantic validator (a function decorated with ``field_validator``, ``model_validator``, ``validator``
  or ``root_validator``, or a ``model_post_init``): pydantic wants ``ValueError`` there and turns it into a
  ``ValidationError``, which the callers translate;
- inside a private helper (innermost enclosing function named ``_x``, not a dunder such as ``__init__``): an
  ``assert``-style check of its arguments, which callers never trigger;
- ``NotImplementedError`` in a stub (a function whose body is only a docstring and that raise: an abstract or
  protocol method);
- ``StopIteration``/``StopAsyncIteration``, which are iteration protocol, not errors.

A bare ``raise`` or ``raise exc`` (re-raising a caught object) is never flagged.
"""

from __future__ import annotations

import ast
import builtins
import inspect
from pathlib import Path

import knowrec
import knowrec.errors

PACKAGE = Path(knowrec.__file__).resolve().parent

PROTOCOL = frozenset({"StopIteration", "StopAsyncIteration"})
FORBIDDEN = frozenset(
    name
    for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning) and name not in PROTOCOL
)
"""Built-in exception classes knowrec must not raise (``NotImplementedError`` is allowed in stubs only)."""

VALIDATOR_DECORATORS = frozenset({"field_validator", "model_validator", "validator", "root_validator"})

_Function = ast.FunctionDef | ast.AsyncFunctionDef


def _raised_name(node: ast.Raise) -> str | None:
    """``ValueError`` for ``raise ValueError(...)``, ``raise ValueError`` and ``raise builtins.ValueError(...)``."""
    exc = node.exc
    if isinstance(exc, ast.Call):
        exc = exc.func
    if isinstance(exc, ast.Name):
        return exc.id
    if isinstance(exc, ast.Attribute) and isinstance(exc.value, ast.Name) and exc.value.id == "builtins":
        return exc.attr
    return None


def _decorator_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_validator(fn: _Function) -> bool:
    return fn.name == "model_post_init" or any(_decorator_name(d) in VALIDATOR_DECORATORS for d in fn.decorator_list)


def _is_private(fn: _Function) -> bool:
    return fn.name.startswith("_") and not (fn.name.startswith("__") and fn.name.endswith("__"))


def _is_stub(fn: _Function) -> bool:
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return len(body) == 1 and isinstance(body[0], ast.Raise)


def forbidden_raises(source: str, filename: str = "<string>") -> list[str]:
    """``file:line: raise X`` for every raise of a built-in exception that the rules above do not allow."""
    found: list[str] = []

    def visit(node: ast.AST, fn: _Function | None) -> None:
        if isinstance(node, ast.Raise) and node.exc is not None:
            name = _raised_name(node)
            allowed = (
                name not in FORBIDDEN
                or (fn is not None and (_is_validator(fn) or _is_private(fn)))
                or (name == "NotImplementedError" and fn is not None and _is_stub(fn))
            )
            if not allowed:
                where = f" in {fn.name}()" if fn is not None else " at module level"
                found.append(f"{filename}:{node.lineno}: raise {name}{where}")
        inner = node if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else fn
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source, filename=filename), None)
    return found


def test_knowrec_raises_only_knowrec_errors():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40, "the walk did not find the package"
    found = [
        hit
        for path in files
        for hit in forbidden_raises(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    ]
    assert not found, "raise a knowrec.errors.KnowrecError subclass instead:\n" + "\n".join(found)


def test_the_walker_catches_a_planted_raise():
    source = """
def public(x):
    if x < 0:
        raise ValueError("x must be >= 0")
    raise RuntimeError

class Thing:
    def __init__(self, n):
        if n < 0:
            raise TypeError(f"bad {n}")

    def method(self):
        try:
            pass
        except OSError as exc:
            raise KeyError("k") from exc

    def unsupported(self):
        if self:
            return 1
        raise NotImplementedError("not yet")

raise Exception("at import")
"""
    found = forbidden_raises(source, "planted.py")
    assert found == [
        "planted.py:4: raise ValueError in public()",
        "planted.py:5: raise RuntimeError in public()",
        "planted.py:10: raise TypeError in __init__()",
        "planted.py:16: raise KeyError in method()",
        "planted.py:21: raise NotImplementedError in unsupported()",
        "planted.py:23: raise Exception at module level",
    ]


def test_the_walker_allows_validators_private_helpers_stubs_and_reraises():
    source = '''
from pydantic import BaseModel, field_validator, model_validator

def _check(x):
    if not x:
        raise ValueError("empty")

class M(BaseModel):
    @field_validator("a")
    @classmethod
    def check_a(cls, v):
        raise ValueError("bad a")

    @model_validator(mode="after")
    def check(self):
        raise ValueError("bad")

    def model_post_init(self, __context):
        raise ValueError("bad")

class Base:
    def score(self, x):
        """Abstract."""
        raise NotImplementedError

def public(it):
    try:
        return next(it)
    except ValueError as exc:
        raise
    except KeyError as exc:
        raise exc
    raise StopIteration
'''
    assert forbidden_raises(source) == []


def test_every_error_class_is_a_knowrec_error():
    classes = [
        obj for _, obj in inspect.getmembers(knowrec.errors, inspect.isclass) if obj.__module__ == "knowrec.errors"
    ]
    assert len(classes) >= 6
    assert all(issubclass(cls, knowrec.errors.KnowrecError) for cls in classes), classes
    assert set(knowrec.errors.__all__) == {cls.__name__ for cls in classes}
