"""Command-line options made from :class:`~rdtutorial.config.TrainConfig`'s fields: one per field.

Each field's metadata (:func:`rdtutorial.config.setting`) gives the option's
help, its allowed values and its argument type; the type annotation gives
its form (``--flag/--no-flag`` for a bool, N values for a tuple); the
default shown is each profile's (:func:`rdtutorial.config.preset`). An option
left out is absent from the parsed namespace, so the profile decides it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing

from . import config


def positive_int(text: str) -> int:
    """An argparse type: 1, 2, ..."""
    if not re.fullmatch(r"\s*\+?\d+\s*", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1, 2, ...), got {text!r}")
    return int(text)


def count(text: str) -> int:
    """An argparse type: 0, 1, 2, ..."""
    if not re.fullmatch(r"\s*\+?\d+\s*", text):
        raise argparse.ArgumentTypeError(f"must be a whole number (0, 1, 2, ...), got {text!r}")
    return int(text)


ARGUMENT_TYPES = {"positive": positive_int, "count": count}  # by a field's ``check``; other numbers: int, float


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_config_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """Add an option for every TrainConfig field except ``exclude``."""
    hints = typing.get_type_hints(config.TrainConfig)
    demo, paper = config.preset("demo"), config.preset("paper")
    for f in config.config_fields():
        if f.name in exclude:
            continue
        kwargs = dict(default=argparse.SUPPRESS, help=f"{f.metadata.get('help', '')} ({_defaults(f, demo, paper)})")
        hint = hints[f.name]
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            items = typing.get_args(hint)
            kwargs.update(type=items[0], nargs=len(items), metavar=f.metadata.get("metavar"))
        else:
            kind = next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))  # str | None -> str
            kwargs["type"] = ARGUMENT_TYPES.get(f.metadata.get("check"), kind)
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(option_name(f.name), **kwargs)


def config_overrides(args: argparse.Namespace, exclude: tuple[str, ...] = ()) -> dict:
    """The TrainConfig fields given on the command line (lists of values as tuples)."""
    given = {f.name: getattr(args, f.name) for f in config.config_fields()
             if f.name not in exclude and hasattr(args, f.name)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}


def _defaults(f: dataclasses.Field, demo: config.TrainConfig, paper: config.TrainConfig) -> str:
    """``default: X``, or ``default: demo X, paper Y`` where the profiles differ."""
    in_demo, in_paper = _show(getattr(demo, f.name)), f.metadata.get("paper") or _show(getattr(paper, f.name))
    return f"default: {in_demo}" if in_demo == in_paper else f"default: demo {in_demo}, paper {in_paper}"


def _show(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return " ".join(_show(v) for v in value)
    return str(value)
