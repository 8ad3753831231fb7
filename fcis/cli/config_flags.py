"""Command-line flags generated from a configuration dataclass: one flag per field, so that a
new field of :class:`fcis.engine.TrainConfig` appears on ``fcis train`` without further code.

A field ``batch_size: int`` becomes ``--batch-size N``; its type comes from the annotation (int,
float, str; ``bool``: ``--amp`` / ``--no-amp``; ``tuple[float, ...]``: one or more values), its
help from ``metadata["help"]`` (plus the field's default), ``metadata["choices"]`` and
``metadata["metavar"]`` go to argparse as they are, and ``metadata["cli"] = False`` keeps a field
off the command line. Every flag defaults to None, "not given": :func:`given_fields` returns only
the fields given, so that the configuration's own defaults (or the recipe, or on ``--resume`` the
checkpoint) decide the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

__all__ = ["add_config_flags", "given_fields", "flag_name", "on_command_line"]


def flag_name(field_name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + field_name.replace("_", "-")


def on_command_line(field: dataclasses.Field) -> bool:
    """Whether ``field`` gets a flag (all fields but those marked ``metadata["cli"] = False``)."""
    return field.metadata.get("cli", True) is not False


def add_config_flags(parser: argparse.ArgumentParser | Any, cls: type) -> None:
    """Add one flag per field of the dataclass ``cls`` to ``parser`` (a parser or argument
    group); each stores to the field's name and defaults to None (not given)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not on_command_line(field):
            continue
        kind, many = _flag_type(hints[field.name], cls, field.name)
        options: dict[str, Any] = {"dest": field.name, "default": None, "help": _help(field)}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = kind
            if many:
                options["nargs"] = "+"
        for key in ("choices", "metavar"):
            if key in field.metadata:
                options[key] = field.metadata[key]
        parser.add_argument(flag_name(field.name), **options)


def given_fields(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` whose flags were given in ``args`` (lists of values as tuples)."""
    given = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, field.name, None) if on_command_line(field) else None
        if value is not None:
            given[field.name] = tuple(value) if isinstance(value, list) else value
    return given


def _flag_type(annotation: Any, cls: type, name: str) -> tuple[type, bool]:
    """``(the type of one value, whether the flag takes several)`` of a field's annotation:
    ``X``, ``X | None``, ``tuple[X, ...]`` (or ``| None``) with X one of int, float, str, bool."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else annotation
    many = typing.get_origin(annotation) is tuple
    if many:
        items = typing.get_args(annotation)
        annotation = items[0] if len(items) == 2 and items[1] is Ellipsis else None
    if annotation not in (int, float, str, bool) or (many and annotation is bool):
        raise TypeError(f"{cls.__name__}.{name}: no command-line flag for the type {annotation!r}; "
                        "give the field metadata={'cli': False}, or a type of int, float, str, bool, "
                        "tuple[X, ...] or X | None")
    return annotation, many


def _help(field: dataclasses.Field) -> str:
    """The field's help, with its default unless that is None (the help then says who decides)."""
    text = field.metadata.get("help", "")
    default = field.default
    if default is not None and default is not dataclasses.MISSING:
        shown = ("--" if default else "--no-") + field.name.replace("_", "-") if isinstance(default, bool) else default
        text = f"{text} (default: {shown})" if text else f"default: {shown}"
    return text.replace("%", "%%")  # argparse formats help with %
