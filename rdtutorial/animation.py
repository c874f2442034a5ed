"""Kernel-free twins of sliders: animations that a static page plays by itself.

An ipywidgets slider needs a live kernel, which the rendered book does not
have. :func:`scrub` draws one frame per parameter value and returns them
with matplotlib's JavaScript player (``FuncAnimation.to_jshtml``) as HTML:
the frames are embedded JPEG data URIs and the player is inline script, so
the page needs no kernel and no network. The Font Awesome stylesheet that
matplotlib links from a CDN is dropped; the book's theme ships the icons.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

import matplotlib.pyplot as plt
from IPython.display import HTML
from matplotlib.animation import FuncAnimation
from matplotlib.figure import Figure

T = TypeVar("T")

_CDN_LINK = re.compile(r'<link rel="stylesheet"\s+href="https?://[^"]*"\s*>\s*')


def scrub(
    draw: Callable[[Figure, T], None],
    values: Sequence[T],
    *,
    figsize: tuple[float, float] = (4.0, 3.0),
    dpi: int = 60,
    interval_ms: int = 800,
) -> HTML:
    """A player over ``values``: frame i is ``draw(figure, values[i])`` on a cleared figure.

    Keep it small: a handful of values and a low ``dpi`` (each frame is one
    JPEG of ``figsize * dpi`` pixels stored in the notebook).
    """
    if not values:
        raise ValueError("scrub needs at least one value")
    fig = plt.figure(figsize=figsize, dpi=dpi)

    def frame(i: int) -> None:
        fig.clear()
        draw(fig, values[i])

    animation = FuncAnimation(fig, frame, frames=len(values), interval=interval_ms, repeat=True)
    with plt.rc_context({"animation.frame_format": "jpeg", "savefig.dpi": dpi}):
        page = animation.to_jshtml(default_mode="once")
    plt.close(fig)
    return HTML(_CDN_LINK.sub("", page))
