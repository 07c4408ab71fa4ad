"""All of one run's settings as validated objects, converted to and from flat values by the schema.

:func:`from_values` turns the flat values a host holds (widget values, parsed flags, infotext,
saved JSON; value form, see :mod:`tipo.options`) into one :class:`Settings`; :func:`to_values` is
its exact inverse. Both are generated from :data:`tipo.options.OPTIONS`: nothing here names a
setting, so a new declaration is converted without touching this module.

Example:
    >>> s = from_values({"tags": "1girl", "length": "short", "seed": 3, "task": "tag_to_long"})
    >>> s.request.length.value, s.sampling.seed, s.expand
    ('short', 3, {'task': 'tag_to_long', 'template': None})
    >>> to_values(s)["seed"], to_values(s)["model"]
    (3, '')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import RequestError
from .options import OPTIONS, Dest, by_name, in_dest
from .request import Request, Sampling

__all__ = ["Settings", "from_values", "to_values"]

_NAMES = {o.name for o in OPTIONS}
_ALIASES = {alias: o.name for o in OPTIONS for alias in o.aliases}


def _defaults(dest: Dest) -> dict[str, object]:
    return {o.keyword: o.to_object(o.default) for o in in_dest(dest)}


@dataclass(frozen=True)
class Settings:
    """The request, the sampling settings, the ``expand`` keywords, the loading keywords and the
    host-only values of one run (object form).

    Attributes:
        request: the :class:`~tipo.request.Request`.
        sampling: the :class:`~tipo.request.Sampling` (``seed`` None: a fresh one).
        expand: keywords of ``Expander.expand`` (``task``, ``template``; None: automatic).
        loading: keywords that choose and load the model (``model``, ``backend``, ``device``,
            ``n_threads``, ``known_tags_only``, ...), for :func:`tipo.pool.open_expander` and
            :meth:`tipo.pool.ExpanderPool.get`.
        host: values only a front end reads.
    """

    request: Request = field(default_factory=Request)
    sampling: Sampling = field(default_factory=Sampling)
    expand: Mapping[str, Any] = field(default_factory=lambda: _defaults(Dest.EXPAND))
    loading: Mapping[str, Any] = field(default_factory=lambda: _defaults(Dest.LOADING))
    host: Mapping[str, Any] = field(default_factory=lambda: _defaults(Dest.HOST))

    def __post_init__(self) -> None:
        for dest in (Dest.EXPAND, Dest.LOADING, Dest.HOST):
            given = dict(getattr(self, dest.value))
            known = {o.keyword: o for o in in_dest(dest)}
            unknown = sorted(set(given) - set(known))
            if unknown:
                raise RequestError(f"unknown {dest.value} setting(s) {unknown}; valid: {', '.join(known)}")
            full = {}
            for keyword, o in known.items():  # validate each through its declaration
                full[keyword] = o.to_object(o.to_value(given[keyword])) if keyword in given else o.to_object(o.default)
            object.__setattr__(self, dest.value, full)

    @classmethod
    def make(cls, request: Request | None = None, sampling: Sampling | None = None, **named: object) -> Settings:
        """Settings from objects plus other settings by option name (object form), each put where its
        declaration says.

        Example:
            >>> Settings.make(Request("1girl"), task=None, template="tags", model="m.gguf").loading["model"]
            'm.gguf'
        """
        parts: dict[Dest, dict[str, object]] = {Dest.EXPAND: {}, Dest.LOADING: {}, Dest.HOST: {}}
        for name, value in named.items():
            if name not in _NAMES:
                raise RequestError(f"unknown setting {name!r}; valid: {', '.join(sorted(_NAMES))}")
            o = by_name(name)
            if o.dest in (Dest.REQUEST, Dest.SAMPLING):
                raise RequestError(f"{name} belongs in the {o.dest.value} object, not a keyword of Settings.make")
            parts[o.dest][o.keyword] = value
        return cls(request or Request(), sampling or Sampling(), parts[Dest.EXPAND], parts[Dest.LOADING],
                   parts[Dest.HOST])

    @property
    def task(self) -> str | None:
        return self.expand.get("task")

    @property
    def template(self) -> str | None:
        return self.expand.get("template")

    def to_dict(self) -> dict[str, object]:
        """The settings as JSON-ready flat values (:func:`to_values`)."""
        return to_values(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Settings:
        """The inverse of :meth:`to_dict` (:func:`from_values`)."""
        return from_values(data)


def canonical_names(values: Mapping[str, object]) -> dict[str, object]:
    """``values`` with older option names (``aliases``) renamed; unknown names are an error."""
    out: dict[str, object] = {}
    for key, value in values.items():
        name = _ALIASES.get(key, key)
        if name not in _NAMES:
            raise RequestError(f"unknown option(s) {[key]}; valid: {sorted(_NAMES)}")
        out[name] = value
    return out


def from_values(values: Mapping[str, object]) -> Settings:
    """Validated :class:`Settings` from option values (value form; missing ones: defaults).

    Host conventions are read from the declarations, once: ``0``/``-1``/``""``/``"auto"`` where an
    option declares them unset, a repeated option as a list or as one separated text. Unknown
    names are an error that lists the valid ones.
    """
    unknown = sorted(set(values) - _NAMES - set(_ALIASES))
    if unknown:
        raise RequestError(f"unknown option(s) {unknown}; valid: {sorted(_NAMES)}")
    given = canonical_names(values)
    parts: dict[Dest, dict[str, object]] = {d: {} for d in Dest}
    for o in OPTIONS:
        value = given.get(o.name, o.default)
        parts[o.dest][o.keyword] = o.to_object(value)
    request = Request(**parts[Dest.REQUEST])  # type: ignore[arg-type]
    sampling = Sampling(**parts[Dest.SAMPLING])  # type: ignore[arg-type]
    return Settings(request, sampling, parts[Dest.EXPAND], parts[Dest.LOADING], parts[Dest.HOST])


def to_values(settings: Settings) -> dict[str, object]:
    """Every option's value (canonical value form, JSON-ready), in declaration order.

    ``from_values(to_values(s)) == s`` for every valid ``s``.
    """
    sources = {Dest.REQUEST: settings.request.__dict__, Dest.SAMPLING: settings.sampling.__dict__,
               Dest.EXPAND: settings.expand, Dest.LOADING: settings.loading, Dest.HOST: settings.host}
    return {o.name: o.to_value(sources[o.dest][o.keyword]) for o in OPTIONS}
