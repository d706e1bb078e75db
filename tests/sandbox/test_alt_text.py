"""Automatic alt text on the sandbox page, in a real headless browser (Debian's chromium
through chromium-driver, as tests/sandbox/test_browser.py): a picture posted in #art
without alt text gets the AI-labelled reply with its buttons; the poster re-posts it and
the re-post shows under their name, its alt text as a caption; a picture posted with alt
text is left alone. SANDBOX_ALT_TEXT_SCREENSHOT=path keeps the README's screenshot."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from bot.client import PalicordBot
from inference.worker.service import Worker
from sandbox.web import Sandbox
from tests.support.browser import attach, wait
from tests.support.discord_server.harness import (
    bot_settings,
    one_shape_scene,
    png_bytes,
    running_bot,
)

pytestmark = pytest.mark.slow  # torch, the demo model, whole processes or a browser


@pytest.fixture
async def bot(sandbox: Sandbox, prefix: str) -> AsyncIterator[PalicordBot]:
    server = sandbox.server
    settings = bot_settings(server, prefix, message_content_intent=True)
    async with running_bot(settings) as running:
        art = server.guild.channel_named("art")
        admin = server.user("admin", admin=True)
        state = await server.slash("settings", user=admin, alt_text_channels=f"<#{art.id}>")
        await server.wait_for_callback(state)
        yield running


def messages(driver: WebDriver) -> list[str]:
    return [m.text for m in driver.find_elements(By.CSS_SELECTOR, "li.msg")]


def browse(driver: WebDriver, base: str, folder: Path, shot: Path) -> None:
    driver.get(base + "/")
    wait(driver, lambda d: "online" in d.find_element(By.ID, "bot-status").text, "the bot")
    Select(driver.find_element(By.ID, "user")).select_by_visible_text("Ben")
    driver.find_element(By.XPATH, "//ul[@id='channels']/li[contains(., 'art')]").click()

    # With alt text: shown as a caption, and left alone by the bot.
    attach(driver, folder / "shapes.png")
    driver.find_element(By.ID, "alt-text").send_keys("my own words about a shape")
    driver.find_element(By.ID, "text").send_keys("with alt text" + Keys.ENTER)
    caption = "figure.described figcaption"
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, caption), "the caption")

    # Without: the AI-labelled reply, with its buttons.
    attach(driver, folder / "shapes.png")
    driver.find_element(By.ID, "text").send_keys("look at this" + Keys.ENTER)
    wait(driver, lambda d: any("AI description:" in t for t in messages(d)), "the reply")
    assert sum("AI description:" in t for t in messages(driver)) == 1
    repost = "//button[contains(., 'Repost with alt text')]"
    driver.find_element(By.XPATH, repost).click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, caption)) == 2, "the re-post")
    wait(driver, lambda d: not d.find_elements(By.XPATH, repost), "the reply removed")
    reposted = driver.find_elements(By.CSS_SELECTOR, "li.msg")[-2:]
    text = "\n".join(m.text for m in reposted)
    assert "Ben" in text and "look at this" in text and "AI description: a picture of" in text
    alt = driver.find_elements(By.CSS_SELECTOR, "figure.described img")[-1].get_attribute("alt")
    assert alt and alt.startswith("AI description:")
    driver.execute_script(
        "const m = document.getElementById('messages'); m.scrollTop = m.scrollHeight;"
    )
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


async def test_the_page_shows_alt_text_replies_and_reposts(
    browser: WebDriver, sandbox: Sandbox, bot: PalicordBot, worker: Worker, tmp_path: Path
) -> None:
    (tmp_path / "shapes.png").write_bytes(png_bytes(one_shape_scene(seed=5).image))
    shot = Path(os.environ.get("SANDBOX_ALT_TEXT_SCREENSHOT") or tmp_path / "alt.png")
    base = sandbox.server.base_url
    await asyncio.to_thread(browse, browser, base, tmp_path, shot)
