"""Workflow lifecycle rules: status transitions, the PATCH-able field set, version ordering.

This module owns, as pure functions (no I/O):

- the status state machine of docs/api.md: active ⇄ disabled,
  active|disabled → deprecated, deprecated → archived, archived is final, and the same status
  is always a no-op (archived → archived included);
- `MUTABLE_FIELDS`, the only fields a PATCH may carry;
- SemVer 2.0.0 parsing and precedence (docs/api.md), and from it which version of
  a workflow name is the latest.

Decisions where the spec is silent:

- **Unknown status names** raise `UnknownStatus`, a subclass of `InvalidTransition`, so a caller
  that only knows `InvalidTransition` still refuses them, while the HTTP layer can tell a
  malformed request (400) from a forbidden move (409). The request schema should reject them
  first anyway.
- **The leading `v`** is a lowercase `v` only (`V1.2.3` is not a semantic version), and no
  surrounding whitespace is tolerated: the spec admits `v` and says anything else is not
  semantic.
- **`SemVer` equality is precedence equality**: build metadata is ignored by `==`, `<` and
  `hash` alike (`1.0.0+a == 1.0.0+b`), so the ordering is a consistent total order. The build
  is kept on the object and in `str()`.
- **Latest among mixed versions**: every semantic version outranks every non-semantic one
  (a name that adopted semver later should not be shadowed by an old "latest" tag). Among
  semantic versions the highest precedence wins; when precedence ties (`1.0.0` and `v1.0.0`,
  or builds differing only in metadata) the one created later wins. Among non-semantic versions
  the one created later wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import total_ordering
from typing import Any

__all__ = [
    "MUTABLE_FIELDS",
    "STATUSES",
    "InvalidTransition",
    "SemVer",
    "UnknownStatus",
    "allowed_targets",
    "check_transition",
    "immutable_fields",
    "latest_version",
    "parse_semver",
    "version_sort_key",
    "versions_newest_first",
]

STATUSES = ("active", "disabled", "deprecated", "archived")

_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "active": frozenset({"disabled", "deprecated"}),
    "disabled": frozenset({"active", "deprecated"}),
    "deprecated": frozenset({"archived"}),
    "archived": frozenset(),
}

MUTABLE_FIELDS = frozenset(
    {
        "status",
        "status_reason",
        "disabled_by",
        "disabled_reason",
        "deprecation_notice",
        "updated_by",
    }
)


class InvalidTransition(ValueError):
    """A status change the lifecycle forbids (HTTP 409 `invalid-transition`)."""

    def __init__(self, current: str, target: str, message: str | None = None) -> None:
        self.current = current
        self.target = target
        super().__init__(message or f"cannot change status from {current!r} to {target!r}")


class UnknownStatus(InvalidTransition):
    """One side of the transition is not a workflow status at all."""

    def __init__(self, current: str, target: str) -> None:
        unknown = current if current not in _TRANSITIONS else target
        super().__init__(
            current,
            target,
            f"unknown workflow status {unknown!r} (expected one of {', '.join(STATUSES)})",
        )


def allowed_targets(current: str) -> frozenset[str]:
    """The statuses `current` may move to (the same status, a no-op, is not listed)."""
    if current not in _TRANSITIONS:
        raise UnknownStatus(current, current)
    return _TRANSITIONS[current]


def check_transition(current: str, target: str) -> bool:
    """True for a legal change, False for the same status (no-op); raises otherwise."""
    if current not in _TRANSITIONS or target not in _TRANSITIONS:
        raise UnknownStatus(current, target)
    if current == target:
        return False
    if target not in _TRANSITIONS[current]:
        raise InvalidTransition(current, target)
    return True


def immutable_fields(patch: Mapping[str, Any]) -> list[str]:
    """The sorted keys of a PATCH body that a PATCH may not change."""
    return sorted(key for key in patch if key not in MUTABLE_FIELDS)


# SemVer 2.0.0 grammar. Numeric identifiers have no leading zeros; a pre-release identifier is
# numeric or contains at least one letter or hyphen; build identifiers are free-form
# alphanumerics. [0-9] rather than \d keeps non-ASCII digits out.
_NUMBER = r"0|[1-9][0-9]*"
_PRERELEASE_PART = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_PART = r"[0-9A-Za-z-]+"
_SEMVER = re.compile(
    rf"v?(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})\.(?P<patch>{_NUMBER})"
    rf"(?:-(?P<prerelease>{_PRERELEASE_PART}(?:\.{_PRERELEASE_PART})*))?"
    rf"(?:\+(?P<build>{_BUILD_PART}(?:\.{_BUILD_PART})*))?"
)


@total_ordering
@dataclass(frozen=True, eq=False)
class SemVer:
    """A parsed semantic version; compares by SemVer 2.0.0 precedence (build ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()
    build: tuple[str, ...] = field(default=())

    @property
    def precedence_key(self) -> tuple:
        """A tuple whose natural order is SemVer precedence.

        A release sorts above all its pre-releases (flag 1 vs 0). Pre-release identifiers map
        to (0, number, "") or (1, 0, text): numeric below alphanumeric, numbers numerically,
        text in ASCII order; tuple comparison makes a longer list win when its prefix ties.
        """
        identifiers = tuple(
            (0, part, "") if isinstance(part, int) else (1, 0, part) for part in self.prerelease
        )
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, identifiers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self.precedence_key == other.precedence_key

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self.precedence_key < other.precedence_key

    def __hash__(self) -> int:
        return hash(self.precedence_key)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(str(part) for part in self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text


def parse_semver(text: str) -> SemVer | None:
    """Parse a SemVer 2.0.0 string with an optional leading 'v'; None if it is not one."""
    if not isinstance(text, str):
        return None
    match = _SEMVER.fullmatch(text)
    if match is None:
        return None
    prerelease = match["prerelease"]
    build = match["build"]
    return SemVer(
        major=int(match["major"]),
        minor=int(match["minor"]),
        patch=int(match["patch"]),
        prerelease=tuple(int(part) if part.isdigit() else part for part in prerelease.split("."))
        if prerelease
        else (),
        build=tuple(build.split(".")) if build else (),
    )


def version_sort_key(version: str, created_order: int) -> tuple:
    """A key whose maximum is the latest version: semver above non-semver, then creation."""
    parsed = parse_semver(version)
    if parsed is None:
        return (0, (), created_order)
    return (1, parsed.precedence_key, created_order)


def latest_version(versions: Iterable[tuple[str, int]]) -> str:
    """The latest of (version, creation order) pairs; ValueError when there are none."""
    pairs = list(versions)
    if not pairs:
        raise ValueError("latest_version() needs at least one version")
    return max(pairs, key=lambda pair: version_sort_key(*pair))[0]


def versions_newest_first(versions: Iterable[tuple[str, int]]) -> list[str]:
    """The versions of one name, latest first (the order of the by-name versions listing)."""
    ordered = sorted(versions, key=lambda pair: version_sort_key(*pair), reverse=True)
    return [version for version, _ in ordered]
