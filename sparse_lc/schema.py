"""The types and ranges config values may take: small checks, one per config key (see
:data:`sparse_lc.config_keys.KEYS`).

A check is called with a value; it returns the value (an integral float such as ``2e4`` for a
whole number becomes an int) or raises :class:`Invalid` saying what it expected. ``expected``
is the same text in English, for error messages and ``docs/configs.md``.
"""
from __future__ import annotations

import math
from typing import Any, Optional


class Invalid(ValueError):
    """A value a check refuses; the message says what was expected."""


class Check:
    expected = "a value"

    def __call__(self, value: Any) -> Any:
        raise NotImplementedError

    def refuse(self, value: Any) -> Invalid:
        return Invalid(f"expected {self.expected}, got {_show(value)}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Number(Check):
    """A real number (or a whole number) in a range; ``low_open`` / ``high_open`` exclude the ends."""

    def __init__(self, low: Optional[float] = None, high: Optional[float] = None, whole: bool = False,
                 low_open: bool = False, high_open: bool = False):
        self.low, self.high, self.whole, self.low_open, self.high_open = low, high, whole, low_open, high_open
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high:g}")
        self.expected = ("a whole number" if whole else "a number") + (" " + " and ".join(bounds) if bounds else "")

    def __call__(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.refuse(value)
        if self.whole:
            if value != int(value):
                raise self.refuse(value)
            value = int(value)
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise self.refuse(value)
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise self.refuse(value)
        return value


class OfType(Check):
    """A value of Python type ``kind`` (a non-empty one, for texts)."""

    def __init__(self, kind: type, expected: str):
        self.kind, self.expected = kind, expected

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, self.kind) or (self.kind is str and not value):
            raise self.refuse(value)
        return value


def boolean() -> OfType:
    return OfType(bool, "true or false")


def text() -> OfType:
    return OfType(str, "a text")


def mapping() -> OfType:
    return OfType(dict, "a mapping of names to values, e.g. {a: 1}")


class Choice(Check):
    def __init__(self, *choices: str):
        self.choices = choices
        self.expected = " or ".join(choices)

    def __call__(self, value: Any) -> Any:
        if value not in self.choices:
            raise self.refuse(value)
        return value


class Maybe(Check):
    """null or what ``check`` takes."""

    def __init__(self, check: Check):
        self.check = check
        self.expected = f"null or {check.expected}"

    def __call__(self, value: Any) -> Any:
        if value is None:
            return None
        try:
            return self.check(value)
        except Invalid:
            raise self.refuse(value) from None


class ListOf(Check):
    """A list of items that ``item`` takes: exactly ``length`` of them, or at least ``min_length``."""

    def __init__(self, item: Check, length: Optional[int] = None, min_length: int = 0, unique: bool = False,
                 expected: Optional[str] = None):
        self.item, self.length, self.min_length, self.unique = item, length, min_length, unique
        count = f"{length} items" if length is not None else (f"{min_length} or more items" if min_length else "items")
        self.expected = expected or f"a list of {count}, each {item.expected}{', all different' if unique else ''}"

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise self.refuse(value)
        if (self.length is not None and len(value) != self.length) or len(value) < self.min_length:
            raise self.refuse(value)
        try:
            items = [self.item(v) for v in value]
        except Invalid:
            raise self.refuse(value) from None
        if self.unique and len(set(map(repr, items))) != len(items):
            raise self.refuse(value)
        return items


class Range(Check):
    """Two numbers ``[low, high]`` with ``low <= high`` (``strict``: ``low < high``), each taken by ``item``."""

    def __init__(self, item: Number, strict: bool = False):
        self.item, self.strict = item, strict
        self.expected = f"[low, high] with low {'<' if strict else '<='} high, each {item.expected}"

    def __call__(self, value: Any) -> Any:
        pair = ListOf(self.item, length=2)
        try:
            low, high = pair(value)
        except Invalid:
            raise self.refuse(value) from None
        if low > high or (self.strict and low == high):
            raise self.refuse(value)
        return [low, high]


class Threshold(Check):
    """A confidence threshold: one number in [0, 1], or a pair ``[rho_1, rho_2]`` of them."""

    expected = "a threshold in [0, 1] or a pair [rho_1, rho_2] of them"

    def __call__(self, value: Any) -> Any:
        single = Number(0.0, 1.0)
        try:
            if isinstance(value, (list, tuple)):
                return ListOf(single, length=2)(value)
            return single(value)
        except Invalid:
            raise self.refuse(value) from None


def size_pair(minimum: int) -> ListOf:
    """``[H, W]``, two whole numbers >= ``minimum``."""
    return ListOf(Number(minimum, whole=True), length=2, expected=f"[H, W], two whole numbers >= {minimum}")


def rgb() -> ListOf:
    return ListOf(Number(0, 255, whole=True), length=3, expected="[r, g, b], each a whole number from 0 to 255")
