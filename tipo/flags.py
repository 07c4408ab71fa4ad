"""The argparse renderer of the settings schema: one adapter for every command line.

``tipo expand``, ``tipo generate`` and ``python -m eval run`` add their setting flags with
:func:`add_option_flags` and read them back with :func:`values_from_args`; nothing else in a
command line names a setting. Kind -> flag: text and choices take one value, numbers are
checked against the declared bounds as they are parsed, switches are ``--flag``, and a repeated
option's flag may be given several times.

Every flag defaults to "not given" (``None``), so a caller can layer defaults of its own (the
evaluation runner's per-item fields) under the flags; the help shows the schema's default. On
the command line a value is always a real one: a host's "unset" spelling (``--width 0``,
``--seed -1``) is refused, leave the flag out instead.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> add_option_flags(p, ("sampling",))
    >>> values_from_args(p.parse_args(["--temperature", "0.7"]))
    {'temperature': 0.7}
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from .errors import RequestError

if TYPE_CHECKING:
    from .settings import Settings
from .options import NO_UNSET, OPTIONS, Dest, Kind, Option, by_name

__all__ = ["add_option_flags", "flag_names", "settings_from_args", "values_from_args"]

_TITLES = {Dest.REQUEST: "request", Dest.SAMPLING: "sampling", Dest.EXPAND: "model pass",
           Dest.LOADING: "model", Dest.HOST: "host"}
_ATTR = "_tipo_option_names"


def _number(option: Option) -> Callable[[str], object]:
    """An argparse ``type`` that parses a number and checks it against the declared bounds."""
    cast = int if option.kind is Kind.INT else float

    def parse(text: str) -> object:
        try:
            value = cast(text)
        except ValueError:
            what = "a whole number" if cast is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        try:
            return option.check(value)
        except RequestError as exc:
            raise argparse.ArgumentTypeError(f"{exc}, or leave the flag out") from None

    parse.__name__ = option.kind.value
    return parse


def _default_note(option: Option) -> str:
    value = option.default
    if value in ("", None, ()) or (option.unset is not NO_UNSET and value == option.unset
                                   and option.kind is not Kind.CHOICE):
        return ""
    return f" (default: {value})"


def add_option_flags(parser: argparse.ArgumentParser, dests: Iterable[Dest | str],
                     exclude: Iterable[str] = (), positional: Iterable[str] = ("tags",),
                     help_overrides: dict[str, str] | None = None) -> None:
    """Add one flag per option of ``dests`` (declaration order, one argument group per dest).

    Args:
        exclude: option names this command does not take (or spells its own way).
        positional: options taken as an optional positional argument instead of a flag.
        help_overrides: name -> help text, where a command gives an option another meaning.
    """
    wanted = [Dest(d) for d in dests]
    skip, pos, helps = set(exclude), set(positional), dict(help_overrides or {})
    groups = {d: parser.add_argument_group(_TITLES[d]) for d in wanted}
    names = list(getattr(parser, _ATTR, ()))
    for o in OPTIONS:
        if o.dest not in groups or o.name in skip:
            continue
        g = groups[o.dest]
        text = helps.get(o.name, o.help)
        names.append(o.name)
        if o.name in pos:
            g.add_argument(o.name, nargs="?", default=None, help=text)
        elif o.repeated:
            g.add_argument(o.flag, action="append", default=None, metavar=o.name.upper(),
                           help=text + " (repeatable)")
        elif o.kind is Kind.BOOL:
            g.add_argument(o.flag, action="store_true", default=None, help=text)
        elif o.kind is Kind.CHOICE:
            g.add_argument(o.flag, choices=o.choices, default=None, help=text + _default_note(o))
        elif o.kind in (Kind.INT, Kind.FLOAT):
            bounds = f" [{o.min}..{o.max}]"
            g.add_argument(o.flag, type=_number(o), default=None, metavar=o.kind.value.upper(),
                           help=text + bounds + _default_note(o))
        else:
            g.add_argument(o.flag, default=None, help=text + _default_note(o))
    setattr(parser, _ATTR, tuple(names))
    parser.set_defaults(**{_ATTR: tuple(names)})


def flag_names(args: argparse.Namespace) -> tuple[str, ...]:
    """The option names the parser of ``args`` rendered as flags."""
    return tuple(getattr(args, _ATTR, ()))


def values_from_args(args: argparse.Namespace) -> dict[str, object]:
    """The option values given on the command line (value form; flags left out are absent).

    A repeated flag's values are concatenated, one entry per flag (a ``--ban`` text is split on
    commas, as everywhere).
    """
    out: dict[str, object] = {}
    for name in flag_names(args):
        value = getattr(args, name, None)
        if value is None:
            continue
        o = by_name(name)
        if o.repeated:
            items: list[str] = []
            for part in value if isinstance(value, list) else [value]:  # one entry per flag; --ban takes a list
                items.extend(o.coerce(part if o.separator == "," else [part]))  # type: ignore[arg-type]
            value = items
        out[name] = value
    return out


def settings_from_args(args: argparse.Namespace, defaults: Mapping[str, object] | None = None) -> Settings:
    """The :class:`~tipo.settings.Settings` the flags describe, over ``defaults`` (value form)."""
    from .settings import from_values

    return from_values({**(defaults or {}), **values_from_args(args)})
