"""A small client of the sandbox's scripting API (standard library only), for smoke tests:

    python -m sandbox.client [--url http://127.0.0.1:8080] ask PICTURE "what color is it?"
    python -m sandbox.client detect PICTURE circle
    python -m sandbox.client segment PICTURE circle
    python -m sandbox.client describe PICTURE

uploads the picture, runs the slash command as the sandbox's first member, waits for the
bot's final answer and prints its text (exit status 1 if none came).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

Json = dict[str, Any]
DEFAULT_URL = "http://127.0.0.1:8080"


class SandboxClient:
    def __init__(self, base_url: str = DEFAULT_URL, *, timeout_s: float = 30.0) -> None:
        self.base = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, path: str, body: Json | None = None, headers: dict[str, str] | None = None,
              data: bytes | None = None) -> Any:  # fmt: skip
        if body is not None:
            data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        request = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
            return json.loads(reply.read())

    def state(self) -> Json:
        result: Json = self._call("/api/state")
        return result

    def upload(self, data: bytes, filename: str, content_type: str = "image/png") -> Json:
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        form = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
        content = f"multipart/form-data; boundary={boundary}"
        result: Json = self._call("/api/attachments", data=form, headers={"Content-Type": content})
        return result

    def interact(self, body: Json) -> Json:
        result: Json = self._call("/api/interactions", body)
        return result

    def messages(self, channel_id: str) -> list[Json]:
        result: list[Json] = self._call(f"/api/channels/{channel_id}/messages")
        return result

    def answer(self, channel_id: str, message_id: str, timeout_s: float = 60.0) -> Json | None:
        """The message once it holds the bot's final word: an answer (with an embed) or an
        error (only its user sees those); place-in-line edits are neither."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in self.messages(channel_id):
                final = m["embeds"] or (m["ephemeral"] and m["content"])
                if m["id"] == message_id and final and not m["thinking"]:
                    return m
            time.sleep(0.1)
        return None

    def run(self, command: str, picture: bytes, **options: str) -> Json | None:
        """Upload `picture`, run `/command` on it in the first channel as the first member
        (not the admin), and return the final answer (None if none came in time)."""
        state = self.state()
        channel = state["servers"][0]["channels"][0]["id"]
        user = next(u for u in state["users"] if not u["admin"])["id"]
        attachment = self.upload(picture, "picture.png")
        started = self.interact(
            {"channel_id": channel, "user_id": user, "command": command,
             "options": {"image": attachment["id"], **options}}
        )  # fmt: skip
        if not started["acknowledged"] or not started["message_id"]:
            return None
        return self.answer(channel, started["message_id"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("command", choices=("ask", "detect", "segment", "describe", "ocr"))
    parser.add_argument("picture", type=Path)
    parser.add_argument("text", nargs="?", default="", help="the question, or the objects")
    args = parser.parse_args(argv)
    extra = {
        "ask": {"question": args.text},
        "detect": {"objects": args.text},
        "segment": {"objects": args.text},
    }
    answer = SandboxClient(args.url).run(
        args.command, args.picture.read_bytes(), **extra.get(args.command, {})
    )
    if answer is None:
        print("no answer", file=sys.stderr)
        return 1
    if not answer["embeds"]:  # the bot refused, and said why
        print(answer["content"], file=sys.stderr)
        return 1
    for embed in answer["embeds"]:
        print(embed.get("description") or embed.get("title") or "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
