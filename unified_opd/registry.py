"""Registries map the names used in configs to components.

Every pluggable piece (divergences, weights, domains, teachers, verifiers, zoo entries) lives in
one `Registry`, so adding a component is one registration and never an edit of the trainer.
A config entry for a component is a *spec*: a name, or a mapping with `name` and its options;
`Registry.build(spec, field)` turns one into the built component, with errors naming the field.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Dict, Iterator, Mapping, Sequence, Tuple, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def _instantiate(obj: Any, options: Dict[str, Any]) -> Any:
    return obj(**options)


class Registry:
    """A name -> object table whose lookup errors name the field and suggest close names.

    `make(obj, options)` builds a component from its registered object and options (default:
    `obj(**options)`); `runtime_args` are the leading parameters the component receives when it
    is used (a weight function's `inputs`), which are therefore not options.
    """

    def __init__(
        self,
        kind: str,
        field: str | None = None,
        make: Callable[[Any, Dict[str, Any]], Any] = _instantiate,
        runtime_args: Sequence[str] = (),
    ):
        self.kind = kind
        self.field = field or kind
        self._items: Dict[str, Any] = {}
        self._make = make
        self._runtime_args = tuple(runtime_args)

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

    def options_of(self, name: str) -> Tuple[str, ...]:
        """The option names the component registered under `name` accepts."""
        obj = self._items[name]
        params = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj).parameters
        skip = {"self", *self._runtime_args}
        return tuple(p for p, v in params.items() if p not in skip and v.kind is not v.VAR_KEYWORD)

    def parse(self, spec: Any, field: str | None = None) -> Tuple[str, Dict[str, Any]]:
        """A spec (a name, or a mapping with `name` and options) -> (name, options)."""
        field = field or self.field
        if isinstance(spec, str):
            return spec, {}
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(f"{field}: expected a name or a mapping with a 'name' key, got {spec!r}")
        options = dict(spec)
        return str(options.pop("name")), options

    def build(self, spec: Any, field: str | None = None, strict: bool = True) -> Any:
        """Build the component a spec names. An option it does not take is a ConfigError naming
        `field.option` (with `strict=False` such options are dropped: a config section that
        holds the knobs of every component, as `divergence` does)."""
        field = field or self.field
        name, options = self.parse(spec, field)
        obj = self.get(name, f"{field}.name")
        accepted = self.options_of(name)
        unknown = [k for k in options if k not in accepted]
        if unknown and strict:
            raise ConfigError(
                f"{field}.{unknown[0]}: unexpected option of {self.kind} {name!r} (it accepts: {', '.join(accepted) or 'none'})"
            )
        return self._make(obj, {k: v for k, v in options.items() if k in accepted})

    def build_all(self, specs: Sequence[Any], field: str | None = None) -> list:
        """`build` for each entry of a list of specs; errors name `field[i]`."""
        field = field or self.field
        return [self.build(spec, f"{field}[{i}]") for i, spec in enumerate(specs)]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
