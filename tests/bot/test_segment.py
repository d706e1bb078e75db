"""/segment, the "Segment…" menu and button, and "segment the cat" mentions, through the real
bot, the local Discord-compatible server, the real Redis queue and an in-process worker
running the shapes oracle (which answers with each shape's true mask, packed as the
engine packs a decoded one); and what the bot makes of hostile segment results."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from bot.answer import ItemAnswer, compose
from bot.client import PalicordBot
from bot.cogs.mentions import parse_mention
from inference.annotate import label_color
from inference.demo.shapes import BACKGROUND, Scene, Shape
from inference.detection import Detection, iou
from inference.display import display_picture
from inference.queue import JobResult
from inference.segmentation import MAX_SEGMENTS, pack_mask
from inference.tasks import NOTE_FIELD, Task
from inference.worker.service import Worker
from sandbox.discord import DiscordServer
from sandbox.discord.recorder import Recorded
from tests.support.discord_server.expect import answer_for, reply_answer, sent_file
from tests.support.discord_server.harness import one_shape_scene, png_bytes
from tests.support.masks import rle_decode

pytestmark = pytest.mark.slow  # torch, the demo model, whole processes or a browser


def truth(scene: Scene) -> np.ndarray:
    pixels = np.asarray(scene.image.convert("RGB")).astype(int)
    differs: np.ndarray = np.abs(pixels - np.array(BACKGROUND)).sum(axis=2) > 30
    return differs


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def check_segment_answer(answer: Recorded, scene: Scene, shape: Shape) -> None:
    """One mask for `shape`: in the JSON as RLE matching the picture, and drawn."""
    assert f"{shape.kind} × 1" in answer.text
    [segment] = json.loads(sent_file(answer, "segments-1.json").data)
    assert segment["label"] == shape.kind and iou(segment["box"], shape.box) >= 0.9
    rle = segment["mask"]
    assert rle["size"] == [scene.image.height, scene.image.width]
    assert mask_iou(rle_decode(rle), truth(scene)) >= 0.8
    drawn = Image.open(io.BytesIO(sent_file(answer, ".png").data)).convert("RGB")
    assert drawn.size == scene.image.size
    x0, y0, x1, y1 = shape.box
    # The shape's centre is tinted with its label's colour; the background far outside
    # its box is untouched.
    centre = np.array(drawn.getpixel(((x0 + x1) // 2, (y0 + y1 * 2) // 3)))
    original = np.array(scene.image.convert("RGB").getpixel(((x0 + x1) // 2, (y0 + y1 * 2) // 3)))
    tint = np.array(label_color(shape.kind))
    assert np.abs(centre - tint).sum() < np.abs(original - tint).sum()
    assert drawn.getpixel((0, 0)) == scene.image.convert("RGB").getpixel((0, 0)) or (
        x0 < 8 and y0 < 8
    )
    assert answer.payload["embeds"][0]["image"]["url"] == "attachment://masks-1.png"


async def test_segment_slash_command(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scene = one_shape_scene(seed=41, size=(220, 160))
    shape = scene.shapes[0]
    image = server.attachment(png_bytes(scene.image), "s.png")
    state = await server.slash(
        "segment", user=server.user("sam"), attachments={"image": image}, objects=shape.kind
    )
    check_segment_answer(await answer_for(server, state), scene, shape)


async def test_segment_menu_button_and_mention(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scene = one_shape_scene(seed=42)
    shape = scene.shapes[0]
    user = server.user("sue")
    target = await server.post_message(
        server.user("tom"), attachments=[server.attachment(png_bytes(scene.image), "m.png")]
    )
    state = await server.message_command("Segment…", target, user=user)
    callback = await server.wait_for_callback(state)
    assert callback.json["type"] == 9 and "Segment" in json.dumps(callback.json)  # a modal
    submitted = await server.submit_modal(state, {"Objects to find": shape.kind})
    answer = await answer_for(server, submitted)
    check_segment_answer(answer, scene, shape)

    assert state.original is None  # the answer is on the modal's interaction
    assert submitted.original is not None
    message = server.messages[int(submitted.original["id"])]
    rows = message["components"]
    assert isinstance(rows, list) and all(len(row["components"]) <= 5 for row in rows)
    pressed = await server.press(message, "Segment…", user=user)
    await server.wait_for_callback(pressed)
    again = await server.submit_modal(pressed, {"Objects to find": shape.kind})
    check_segment_answer(await answer_for(server, again), scene, shape)

    since = server.recorder.next_seq()
    msg = await server.post_message(
        user,
        f"segment the {shape.kind}",
        attachments=[server.attachment(png_bytes(scene.image), "n.png")],
        mention_bot=True,
    )
    check_segment_answer(await reply_answer(server, msg, since=since), scene, shape)


def test_mentions_name_objects_bare() -> None:
    ask = parse_mention("<@9> segment the cat ; a dog, an owl", 9)
    assert ask.task is Task.SEGMENT and ask.objects == "cat ;dog,owl"
    assert parse_mention("<@9> segment apple", 9).objects == "apple"


def test_hostile_segment_results_still_make_one_safe_answer() -> None:
    # What a broken or hostile worker could send: hundreds of segments, huge labels with
    # mentions, masks that do not unpack, boxes far outside the picture.
    picture = Image.new("RGB", (300, 200), BACKGROUND)
    good = pack_mask(Image.new("L", (64, 64), 255))
    detections = [
        Detection(f"@everyone {'x' * 5000} {i}", (i - 50, -10, i + 500, 9000), good)
        for i in range(300)
    ]
    detections += [Detection("junk", (0, 0, 10, 10), "!!!not a mask!!!")] * 20
    result = JobResult(
        job_id="j",
        context={NOTE_FIELD: "@here note"},
        task=Task.SEGMENT,
        detections=tuple(detections),
        display=display_picture(picture, picture.size),
    )
    answer = compose([ItemAnswer("p.png", result)], max_file_bytes=1024 * 1024)
    [embed] = answer.embeds
    assert embed.description is not None and len(embed.description) <= 4096
    assert "@everyone" not in embed.description and "@here" not in embed.description
    names = [f.filename for f in answer.files]
    assert names == ["masks-1.png", "segments-1.json"]
    assert sum(len(f.data) for f in answer.files) <= 1024 * 1024
    # The JSON keeps the first entries that fit its share of the upload, masks first.
    segments = json.loads(answer.files[1].data)
    assert 0 < len(segments) < len(detections) and len(answer.files[1].data) <= 1024 * 1024 // 16
    assert [s["label"] for s in segments] == [d.label for d in detections[: len(segments)]]
    assert segments[0]["mask"]["size"] == [200, 300]


def test_segment_without_a_decoder_says_how_to_get_one() -> None:
    picture = Image.new("RGB", (100, 100), BACKGROUND)
    note = "Masks need PaliGemma's mask decoder; set MASK_DECODER."
    result = JobResult(
        job_id="j",
        context={NOTE_FIELD: note},
        task=Task.SEGMENT,
        detections=(Detection("cat", (10, 10, 50, 50)),),
        display=display_picture(picture, picture.size),
    )
    answer = compose([ItemAnswer("p.png", result)], max_file_bytes=1024 * 1024)
    assert "MASK\\_DECODER" in (answer.embeds[0].description or "")
    [segment] = json.loads(answer.files[1].data)
    assert segment == {"label": "cat", "box": [10, 10, 50, 50], "mask": None}


def test_the_parser_caps_what_reaches_the_bot() -> None:
    assert MAX_SEGMENTS <= 16
