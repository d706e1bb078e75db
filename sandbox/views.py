"""Discord's objects as the sandbox page (and its API) shows them: a message with who wrote
it, whom an ephemeral one is for, its embeds, files and buttons; a modal's fields."""

from __future__ import annotations

from sandbox.discord import interactions as ix
from sandbox.discord import payloads as p


def _author(user: p.Json) -> p.Json:
    return {
        "id": user["id"],
        "name": user.get("global_name") or user.get("username"),
        "bot": bool(user.get("bot")),
        "avatar_url": user.get("avatar_url"),  # a webhook message's (a re-post's) avatar
    }


def message_view(msg: p.Json) -> p.Json:
    flags = int(msg.get("flags") or 0)
    meta = msg.get("interaction_metadata") or {}
    ephemeral = bool(flags & 64)
    referenced = msg.get("referenced_message") or {}
    return {
        "id": msg["id"],
        "channel_id": msg["channel_id"],
        "author": _author(msg["author"]),
        "content": msg.get("content") or "",
        "embeds": msg.get("embeds") or [],
        "attachments": [
            {k: a.get(k) for k in ("id", "filename", "url", "content_type", "size", "description")}
            for a in msg.get("attachments") or []
        ],
        "stickers": [
            {k: str(item.get(k)) for k in ("id", "name", "format_type")}
            for item in msg.get("sticker_items") or []
        ],
        "buttons": [
            [
                {
                    "custom_id": c.get("custom_id"),
                    "label": c.get("label") or "",
                    "style": c.get("style"),
                }
                for c in row.get("components") or []
                if c.get("type") == ix.BUTTON
            ]
            for row in msg.get("components") or []
        ],
        "edited": msg.get("edited_timestamp") is not None,
        "thinking": bool(flags & 128),
        "ephemeral": ephemeral,
        "visible_to": meta["user"]["id"] if ephemeral and meta.get("user") else None,
        "interaction_user": _author(meta["user"]) if meta.get("user") else None,
        "command": (msg.get("interaction") or {}).get("name") or None,
        "reply_to": referenced.get("id"),
        "timestamp": msg.get("timestamp"),
    }


def modal_view(modal: p.Json) -> p.Json:
    """The modal's title and text fields, flattened from Discord's component rows."""
    fields: list[p.Json] = []

    def walk(component: p.Json, label: str = "") -> None:
        if component.get("type") == ix.TEXT_INPUT:
            fields.append(
                {
                    "custom_id": component["custom_id"],
                    "label": component.get("label") or label,
                    "style": component.get("style", 1),
                    "required": component.get("required", True),
                    "placeholder": component.get("placeholder") or "",
                    "value": component.get("value") or "",
                }
            )
        if "component" in component:
            walk(component["component"], component.get("label", ""))
        for child in component.get("components") or []:
            walk(child)

    for component in modal.get("components") or []:
        walk(component)
    return {"custom_id": modal.get("custom_id"), "title": modal.get("title", ""), "fields": fields}
