"""The vocabulary of config value rules: each config field declares one with `spec(rule)`.

A Rule says in words what is allowed (for the one-line error) and checks a value that already has
the field's type (facemark.config checks types first). Compose: `optional(integer(1))`,
`sequence(number(0, 1), 3)`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rule:
    """What a config value may be beyond its type. `allowed` says it in words for the error
    message ("an integer >= 1"); `accepts(value)` checks a value that already has the field's
    type; `hint(value)` may add a close match (" (did you mean 'wing'?)")."""

    allowed: str
    accepts: Callable[[Any], bool]
    hint: Callable[[Any], str] = lambda value: ""


def spec(rule: Rule) -> Any:
    """A dataclass field with its value rule. No default: defaults live in configs/base.yaml only."""
    return field(metadata={"rule": rule})


def _interval(low: float, high: float | None, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False,
           what: str = "a number") -> Rule:
    """A finite number in [low, high] (either end may be open; high None = unbounded)."""
    def accepts(value: float) -> bool:
        above = value > low if low_open else value >= low
        below = high is None or (value < high if high_open else value <= high)
        return math.isfinite(value) and above and below

    return Rule(f"{what} {_interval(low, high, low_open, high_open)}", accepts)


def integer(low: int, high: int | None = None, why: str = "") -> Rule:
    """An integer from low to high (high None = unbounded)."""
    words = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    return Rule(words + why, lambda value: value >= low and (high is None or value <= high))


def off_or_at_least(low: int) -> Rule:
    """0 (off) or an integer >= low."""
    return Rule(f"0 (off) or an integer >= {low}", lambda value: value == 0 or value >= low)


def probability() -> Rule:
    return number(0.0, 1.0, what="a probability")


def _close(value: Any, names: Iterable[str]) -> str:
    match = difflib.get_close_matches(str(value), list(names), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def one_of(*choices: str) -> Rule:
    return Rule(f"one of {', '.join(choices)}", lambda value: value in choices, lambda value: _close(value, choices))


def named(what: str, exists: Callable[[str], bool], names: Callable[[], Iterable[str]]) -> Rule:
    """A name in a registry known only at run time (timm models, shipped schemes): `exists(name)`
    checks one, `names()` lists them for the close-match hint. Both are called only when needed."""
    return Rule(what, lambda value: exists(value), lambda value: _close(value, names()))


def subset_of(choices: tuple[str, ...], min_items: int = 0) -> Rule:
    """A list of names from `choices` (or "all"), each at most once, at least `min_items` long."""
    valid = (*choices, "all")

    def accepts(value: list[str]) -> bool:
        return len(value) >= min_items and len(set(value)) == len(value) and all(v in valid for v in value)

    least = "a non-empty" if min_items else "a"
    return Rule(f"{least} list of distinct names from {', '.join(valid)}", accepts,
                lambda value: next((_close(v, valid) for v in value if v not in valid), ""))


def sequence(rule: Rule, count: int) -> Rule:
    """A list of exactly `count` values, each passing `rule` (e.g. a per-channel mean: count 3)."""
    return Rule(f"a list of {count} values, each {rule.allowed}",
                lambda value: len(value) == count and all(rule.accepts(v) for v in value))


def optional(rule: Rule) -> Rule:
    """null, or a value that passes `rule`."""
    return Rule(f"null or {rule.allowed}", lambda value: value is None or rule.accepts(value), rule.hint)


def flag() -> Rule:
    """A boolean: its type is the whole rule (true or false)."""
    return Rule("true or false", lambda value: True)


def text() -> Rule:
    return Rule("a non-empty string", lambda value: bool(value.strip()))


def folder_name() -> Rule:
    """One folder name (letters, digits, '.', '_', '-'; not starting with '.')."""
    return Rule("a folder name of letters, digits, '.', '_' or '-'",
                lambda value: re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", value) is not None)
