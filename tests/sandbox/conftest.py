"""The sandbox page for the browser tests: a headless chromium (`browser`) and a running
sandbox with one sample picture (`sandbox`). Selenium is imported only when a browser test
runs, so that the fast subset (`-m "not slow"`) never loads it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from sandbox.web import Sandbox
from tests.support.discord_server.harness import one_shape_scene, png_bytes, running_sandbox

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    from tests.support.browser import headless_chromium

    with headless_chromium() as driver:
        yield driver


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    scene = one_shape_scene(seed=5, size=(224, 224))
    samples = {"shapes.png": png_bytes(scene.image)}
    async with running_sandbox(notice="Demo model: coloured shapes only.", samples=samples) as page:
        yield page
