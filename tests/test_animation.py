"""Tests for rdtutorial.animation: one embedded frame per value, a player, nothing from the network."""

import re

import pytest

from rdtutorial.animation import scrub


def test_scrub_embeds_one_jpeg_per_value_and_no_network():
    titles = []

    def draw(fig, value):
        fig.add_subplot().plot([0, 1], [0, value])
        titles.append(value)

    page = scrub(draw, [1, 2, 3], figsize=(2, 1.5), dpi=40).data
    assert page.count("data:image/jpeg;base64,") == 3
    assert titles[-3:] == [1, 2, 3]
    assert 'class="anim-slider"' in page and "play_animation" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the player must not load anything from the network"
    assert len(page) < 60_000


def test_scrub_needs_values():
    with pytest.raises(ValueError, match="at least one"):
        scrub(lambda fig, value: None, [])
