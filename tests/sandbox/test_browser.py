"""The sandbox page in a real headless browser (Debian's chromium, driven by Selenium through
Debian's chromium-driver; nothing is downloaded): /detect on an uploaded picture shows the
annotated image and its legend, a mention with a question gets its answer, and a text
file named .png gets an error only its user sees. The bot and a worker run for real.

SANDBOX_SCREENSHOT=path keeps the screenshot taken with the detection answer on screen,
SANDBOX_SEGMENT_SCREENSHOT=path the one of /segment on the demo model (the README's
pictures come from here)."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from bot.client import PalicordBot
from inference.demo import shapes
from inference.worker.service import Worker
from sandbox.web import Sandbox
from tests.support.browser import attach, wait
from tests.support.demo import demo_engine
from tests.support.discord_server.harness import (
    bot_settings,
    one_shape_scene,
    png_bytes,
    running_bot,
    running_worker,
    worker_settings,
)

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes


@pytest.fixture
async def bot(sandbox: Sandbox, prefix: str) -> AsyncIterator[PalicordBot]:
    async with running_bot(bot_settings(sandbox.server, prefix)) as running:
        yield running


def bot_answers(driver: WebDriver) -> list[WebElement]:
    return [
        m
        for m in driver.find_elements(By.CSS_SELECTOR, "li.msg")
        if m.find_elements(By.CSS_SELECTOR, ".bot-tag")
        and m.find_elements(By.CSS_SELECTOR, ".embed")
        and not m.find_elements(By.CSS_SELECTOR, ".thinking")
    ]


def run_slash(driver: WebDriver, name: str, **options: str) -> None:
    text = driver.find_element(By.ID, "text")
    text.clear()
    text.send_keys(f"/{name}")
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"li[data-command='{name}']"), name)
    driver.find_element(By.CSS_SELECTOR, f"li[data-command='{name}']").click()
    for option, value in options.items():
        driver.find_element(By.CSS_SELECTOR, f"[data-option='{option}']").send_keys(value)
    driver.find_element(By.ID, "run-command").click()


def browse(driver: WebDriver, base: str, folder: Path, shape: str) -> None:
    """Everything the browser does (blocking calls: run in a thread beside the servers)."""
    driver.get(base + "/")
    wait(driver, lambda d: "online" in d.find_element(By.ID, "bot-status").text, "the bot")
    assert "coloured shapes" in driver.find_element(By.ID, "notice").text
    Select(driver.find_element(By.ID, "user")).select_by_visible_text("Ben")

    # /detect on an uploaded picture: the annotated image and its legend appear.
    attach(driver, folder / "shapes.png")
    run_slash(driver, "detect", objects=shape)
    wait(driver, lambda d: len(bot_answers(d)) == 1, "the detection answer")
    legend = f"{shape} × 1"
    wait(
        driver,
        lambda d: legend in bot_answers(d)[0].find_element(By.CSS_SELECTOR, ".embed").text,
        legend,
    )
    image = "li.msg .embed img[src*='detections']"
    wait(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, image).get_property("naturalWidth"),
        "the annotated image",
    )
    shot = Path(os.environ.get("SANDBOX_SCREENSHOT") or folder / "sandbox.png")
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    # A follow-up button on that answer: a question about the same picture, in a modal.
    ask = "li.msg button[data-custom-id^='pc:ask:']"
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, ask).is_displayed(), "the buttons")
    driver.find_element(By.CSS_SELECTOR, ask).click()
    wait(driver, lambda d: d.find_element(By.ID, "modal").is_displayed(), "the modal")
    driver.find_element(By.CSS_SELECTOR, "#modal input").send_keys(f"what color is the {shape}?")
    driver.find_element(By.ID, "modal-submit").click()
    wait(driver, lambda d: len(bot_answers(d)) == 2, "the follow-up's answer")
    assert "used Ask about this image" not in driver.page_source  # a button, not a command
    followup_shot = shot.with_name(shot.stem + "-followup.png")
    assert driver.save_screenshot(str(followup_shot))

    # A message that mentions the bot, with a picture and a question: a reply answers it.
    attach(driver, folder / "shapes.png")
    text = driver.find_element(By.ID, "text")
    text.send_keys(f"@Palicord what color is the {shape}?")
    text.send_keys(Keys.ENTER)
    wait(driver, lambda d: len(bot_answers(d)) == 3, "the answer to the mention")
    assert bot_answers(driver)[2].find_elements(By.CSS_SELECTOR, ".reply-ref")

    # A text file named .png: an error that only its user sees.
    attach(driver, folder / "notes.png")
    run_slash(driver, "describe")
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "li.msg.ephemeral"), "the error")
    error = driver.find_element(By.CSS_SELECTOR, "li.msg.ephemeral")
    assert "Only you can see this" in error.text
    Select(driver.find_element(By.ID, "user")).select_by_visible_text("Chen")
    wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "li.msg.ephemeral"), "hidden")

    # A link instead of an upload: the sandbox previews it, as Discord would, and the bot
    # reads the preview; then a sticker sent with a mention.
    before = len(bot_answers(driver))
    driver.find_element(By.CSS_SELECTOR, "#samples button[data-sample-link]").click()
    text = driver.find_element(By.ID, "text")
    text.send_keys("@Palicord")
    text.send_keys(Keys.ENTER)
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".embed img.preview"), "the preview")
    wait(driver, lambda d: len(bot_answers(d)) == before + 1, "the answer about the link")
    text.send_keys("@Palicord")
    driver.find_element(By.CSS_SELECTOR, "#samples button[data-sticker]").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "li.msg .sticker img"), "the sticker")
    wait(driver, lambda d: len(bot_answers(d)) == before + 2, "the answer about the sticker")


async def test_the_page_runs_detect_a_mention_and_shows_errors(
    browser: WebDriver, sandbox: Sandbox, bot: PalicordBot, worker: Worker, tmp_path: Path
) -> None:
    scene = one_shape_scene(seed=5, size=(224, 224))
    (tmp_path / "shapes.png").write_bytes(png_bytes(scene.image))
    (tmp_path / "notes.png").write_text("not a picture at all")
    base = sandbox.server.base_url
    await asyncio.to_thread(browse, browser, base, tmp_path, scene.shapes[0].kind)


def browse_segment(driver: WebDriver, base: str, folder: Path, shape: str) -> None:
    """/segment on the demo model: the masks appear, and the answer's row of buttons
    offers "Segment…" among Discord's five."""
    driver.get(base + "/")
    wait(driver, lambda d: "online" in d.find_element(By.ID, "bot-status").text, "the bot")
    attach(driver, folder / "shapes.png")
    run_slash(driver, "segment", objects=shape)
    wait(driver, lambda d: len(bot_answers(d)) == 1, "the segment answer")
    image = "li.msg .embed img[src*='masks']"
    wait(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, image).get_property("naturalWidth"),
        "the picture with its masks",
    )
    assert f"{shape} × 1" in bot_answers(driver)[0].find_element(By.CSS_SELECTOR, ".embed").text
    buttons = "li.msg button[data-custom-id^='pc:']"
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, buttons), "the buttons")
    labels = [b.text for b in driver.find_elements(By.CSS_SELECTOR, buttons)]
    assert "Segment…" in labels and len(labels) == 5
    shot = Path(os.environ.get("SANDBOX_SEGMENT_SCREENSHOT") or folder / "segment.png")
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


async def test_the_page_segments_with_the_demo_model(
    browser: WebDriver, sandbox: Sandbox, bot: PalicordBot, prefix: str, tmp_path: Path
) -> None:
    # Three shapes; the triangle's mask shows the shape, not just its box.
    scene = shapes.make_scene(random.Random(6), size=(320, 240))
    kind = "triangle"
    (tmp_path / "shapes.png").write_bytes(png_bytes(scene.image))
    async with running_worker(worker_settings(prefix), demo_engine()):
        await asyncio.to_thread(browse_segment, browser, sandbox.server.base_url, tmp_path, kind)
