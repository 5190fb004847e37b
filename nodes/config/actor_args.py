"""Checking a topology's `args` against an actor's constructor, before anything starts.

Each key must be a parameter of the constructor (a close spelling is suggested), every
parameter without a default must be given, and each value must have the type the
constructor's annotation names (`typing.get_type_hints`): an int is accepted for a float,
`Literal` parameters take one of their choices, `X | None` takes null. An actor whose
constructor takes `**kwargs` accepts any further key; an annotation that cannot be evaluated
leaves that value unchecked.

Arguments that name other actors are declared by the actor class in `PATH_ARGS` (argument →
built-in actor name, see actors/catalog.py); `path_args` lists them for the topology, which
checks that each path names an actor of that kind in the tree.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class ArgProblem:
    """What is wrong with the args: about one `key` (None: the args as a whole)."""

    key: str | None
    message: str


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def describe(hint: Any) -> str:
    """`hint` in the topology's words: "a number", "a list of strings", "null"..."""
    if hint is Any:
        return "anything"
    if hint is type(None) or hint is None:
        return "null"
    if _is_union(hint):
        return " or ".join(describe(member) for member in typing.get_args(hint))
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, params))
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple):
        return f"a list of {_plural(params[0])}" if params else "a list"
    if origin in (dict, Mapping) or hint is dict:
        return f"a mapping of {_plural(params[0])} to {_plural(params[1])}" if len(params) == 2 else "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, f"a {getattr(hint, '__name__', hint)}")


def _plural(hint: Any) -> str:
    plurals = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    return plurals.get(hint, describe(hint))


def fits(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits the annotation `hint`."""
    if hint is Any or isinstance(hint, (str, typing.TypeVar)):
        return True
    if hint is type(None) or hint is None:
        return value is None
    if _is_union(hint):
        return any(fits(value, member) for member in typing.get_args(hint))
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return any(value == choice and type(value) is type(choice) for choice in params)
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple):
        if not isinstance(value, list):
            return False
        if origin is tuple and params and params[-1] is not Ellipsis:
            return len(value) == len(params) and all(map(fits, value, params))
        return not params or all(fits(item, params[0]) for item in value)
    if origin in (dict, Mapping) or hint is dict:
        return isinstance(value, dict) and (
            len(params) != 2 or all(fits(k, params[0]) and fits(v, params[1]) for k, v in value.items())
        )
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # an annotation this checker does not know: unchecked


def _hints(actor: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(actor.__init__)  # type: ignore[misc]
    except Exception:  # noqa: BLE001 - an annotation that cannot be evaluated is left unchecked
        return {}


def check_args(actor: type, args: Mapping[str, Any], name: str) -> list[ArgProblem]:
    """Every problem with calling `actor(**args)`, key by key (`name`: the actor as the
    topology names it)."""
    try:
        parameters = list(inspect.signature(actor).parameters.values())
    except (TypeError, ValueError):
        return []
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    named = {
        p.name: p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    hints = _hints(actor)
    problems = []
    for key, value in args.items():
        if key not in named:
            if not open_ended:
                hint = difflib.get_close_matches(key, named, n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                accepted = ", ".join(named) or "none"
                problems.append(ArgProblem(key, f"unknown argument of {name}{suggestion} (accepted: {accepted})"))
            continue
        if key in hints and not fits(value, hints[key]):
            problems.append(ArgProblem(key, f"{value!r} must be {describe(hints[key])}"))
    missing = [name for name, p in named.items() if p.default is inspect.Parameter.empty and name not in args]
    if missing:
        problems.append(ArgProblem(None, f"{name} needs " + ", ".join(map(repr, missing))))
    return problems


def path_args(actor: type, args: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """The given args that name other actors: key → (path, built-in actor name it must be)."""
    declared: dict[str, str] = getattr(actor, "PATH_ARGS", {})
    return {key: (args[key], kind) for key, kind in declared.items() if isinstance(args.get(key), str)}
