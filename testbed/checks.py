"""Checking user-written settings (scenario files, and the radio settings inside them).

One ``Checker`` collects every problem of one file as a ``Problem`` (``FILE: key.path: what was
expected, what was found``) instead of stopping at the first. Each check returns the value, or
``BAD`` after recording why it is wrong, so a caller can carry on and report the rest.
``Section`` checks one mapping of optional settings (``lab.radio``, a host's ``tools``...): each
getter returns the key's value, or the setting's default when the key is absent, null or wrong.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or doubtful, for a warning) with a settings file."""

    source: str
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        if self.path:
            return f"{self.source}: {self.path}: {self.message}"
        return f"{self.source}: {self.message}"


class _Bad:
    """Marks a value that failed its check (its problem is already recorded)."""

    def __repr__(self) -> str:
        return "<bad>"


BAD: Any = _Bad()

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NAME = "a name of letters, digits, '.', '_' or '-'"
"""What a scenario or configuration name may be (it names files and table rows)."""


def ok(*values: Any) -> bool:
    """True if none of ``values`` failed its check."""
    return not any(v is BAD for v in values)


def join(path: str, key: str | int) -> str:
    """The key path of ``key`` inside ``path``: ``a.b``, ``a[3]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def describe(value: Any) -> str:
    """What a YAML value is, for "expected X, got <this>"."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value:g})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def suggest(word: Any, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _quoting_helps(value: Any, pattern: re.Pattern[str] | None) -> bool:
    """True if ``value`` is a number YAML read from digits that, quoted, ``pattern`` accepts
    (``mcc: 001`` arrives as 1; with leading zeros restored it is a valid '001')."""
    if pattern is None or isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return False
    return any(pattern.match("0" * zeros + str(value)) for zeros in range(4))


class Checker:
    """Collects the problems and warnings of one file (``source``)."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, path: str, message: str) -> Any:
        self.problems.append(Problem(self.source, path, message))
        return BAD

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(Problem(self.source, path, message, "warning"))

    # ---- scalar checks: return the value, or BAD after recording a problem

    def number(
        self,
        value: Any,
        path: str,
        *,
        minimum: float | None = None,
        above: float | None = None,
        maximum: float | None = None,
        below: float | None = None,
    ) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = ""
            if isinstance(value, str):
                try:
                    float(value)
                    hint = " (YAML 1.1 reads exponents without a dot as text: write 1.0e3)"
                except ValueError:
                    pass
            return self.error(path, f"expected a number, got {describe(value)}{hint}")
        if not math.isfinite(value):
            return self.error(path, f"expected a finite number, got {value}")
        if minimum is not None and maximum is not None and not minimum <= value <= maximum:
            return self.error(
                path, f"expected a number from {minimum:g} to {maximum:g}, got {value:g}"
            )
        if minimum is not None and value < minimum:
            return self.error(path, f"expected a number >= {minimum:g}, got {value:g}")
        if above is not None and value <= above:
            return self.error(path, f"expected a number > {above:g}, got {value:g}")
        if maximum is not None and value > maximum:
            return self.error(path, f"expected a number <= {maximum:g}, got {value:g}")
        if below is not None and value >= below:
            return self.error(path, f"expected a number < {below:g}, got {value:g}")
        return float(value)

    def integer(
        self,
        value: Any,
        path: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        choices: Sequence[int] | None = None,
    ) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            return self.error(path, f"expected an integer, got {describe(value)}")
        if choices is not None and value not in choices:
            return self.error(
                path, f"expected one of {', '.join(map(str, choices))}, got {value}"
            )
        if minimum is not None and maximum is not None and not minimum <= value <= maximum:
            return self.error(path, f"expected an integer from {minimum} to {maximum}, got {value}")
        if minimum is not None and value < minimum:
            return self.error(path, f"expected an integer >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            return self.error(path, f"expected an integer <= {maximum}, got {value}")
        return value

    def boolean(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            return self.error(path, f"expected true or false, got {describe(value)}")
        return value

    def string(
        self,
        value: Any,
        path: str,
        *,
        choices: Sequence[str] | None = None,
        pattern: re.Pattern[str] | None = None,
        what: str = "",
    ) -> Any:
        if not isinstance(value, str):
            hint = ""
            if _quoting_helps(value, pattern):
                hint = " (YAML reads unquoted digits as a number: quote it)"
            return self.error(path, f"expected {what or 'a string'}, got {describe(value)}{hint}")
        if choices is not None and value not in choices:
            return self.error(
                path,
                f"expected one of {', '.join(choices)}, got {value!r}{suggest(value, choices)}",
            )
        if not value:
            expected = what or "a non-empty string"
            return self.error(path, f"expected {expected}, got {describe(value)}")
        if pattern is not None and not pattern.match(value):
            return self.error(path, f"expected {what or pattern.pattern}, got {value!r}")
        return value

    # ---- containers

    def mapping(
        self,
        value: Any,
        path: str,
        allowed: Sequence[str],
        required: Sequence[str] = (),
        *,
        what: str = "",
    ) -> dict[str, Any] | None:
        """The mapping with unknown keys reported (and dropped); ``None`` if not a mapping."""
        if not isinstance(value, dict):
            of = f" of {what}" if what else ""
            self.error(path, f"expected a mapping{of}, got {describe(value)}")
            return None
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str) or key not in allowed:
                hint = suggest(key, allowed) or f"; expected one of {', '.join(allowed)}"
                self.error(join(path, str(key)), f"unknown key {key!r}{hint}")
                continue
            out[key] = item
        for key in required:
            if out.get(key) is None:
                self.error(join(path, key), "required key is missing (or null)")
        return out

    def sequence(self, value: Any, path: str, *, nonempty: bool = True) -> list[Any] | None:
        if not isinstance(value, list):
            self.error(path, f"expected a list, got {describe(value)}")
            return None
        if nonempty and not value:
            self.error(path, "expected a non-empty list, got an empty one")
            return None
        return value

    def get(
        self,
        data: dict[str, Any],
        key: str,
        path: str,
        check: Callable[..., Any],
        default: Any = None,
        **kw: Any,
    ) -> Any:
        """``data[key]`` checked at ``path.key``, or ``default`` when absent or null."""
        value = data.get(key)
        return default if value is None else check(value, join(path, key), **kw)


class Section:
    """One mapping of optional settings at ``path`` (absent: every default), checked by ``ck``.

    Each getter returns the key's value, or ``default`` when the key is absent, null or wrong (the
    problem is recorded in ``ck``); ``ok`` says whether this section recorded no error.
    """

    def __init__(self, ck: Checker, raw: Any, path: str, allowed: Sequence[str], what: str):
        self.ck = ck
        self.path = path
        self._errors_before = len(ck.problems)
        self.data: dict[str, Any] = {}
        if raw is not None:
            self.data = ck.mapping(raw, path, allowed, what=what) or {}

    @property
    def ok(self) -> bool:
        return len(self.ck.problems) == self._errors_before

    def at(self, key: str) -> str:
        return join(self.path, key)

    def error(self, key: str, message: str) -> None:
        self.ck.error(self.at(key), message)

    def warn(self, key: str, message: str) -> None:
        self.ck.warn(self.at(key), message)

    def _checked(self, check: Callable[..., Any], key: str, default: Any, **kw: Any) -> Any:
        value = self.ck.get(self.data, key, self.path, check, default, **kw)
        return default if value is BAD else value

    def string(self, key: str, default: Any, **kw: Any) -> Any:
        return self._checked(self.ck.string, key, default, **kw)

    def integer(self, key: str, default: Any, **kw: Any) -> Any:
        return self._checked(self.ck.integer, key, default, **kw)

    def number(self, key: str, default: Any, **kw: Any) -> Any:
        return self._checked(self.ck.number, key, default, **kw)

    def boolean(self, key: str, default: Any) -> Any:
        return self._checked(self.ck.boolean, key, default)
