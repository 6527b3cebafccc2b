"""Registries map the names used in configs to components.

Every pluggable piece (divergences, weights, domains, teachers, verifiers, zoo entries) lives in
one `Registry`, so adding a component is one registration and never an edit of the trainer.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry:
    """A name -> object table whose lookup errors name the field and suggest close names."""

    def __init__(self, kind: str, field: str | None = None):
        self.kind = kind
        self.field = field or kind
        self._items: Dict[str, Any] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register `obj` under `name`; usable as a decorator when `obj` is omitted."""

        def add(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return add(obj) if obj is not None else add

    def get(self, name: str, field: str | None = None) -> Any:
        if name not in self._items:
            known = sorted(self._items)
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{field or self.field}: unknown {self.kind} {name!r}{hint} (known: {', '.join(known)})"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
