"""Interaction payloads (slash commands, message context menus, modal submits) and the
server-side record of what happened to each one."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.discord.payloads import (
    DEFAULT_UPLOAD_LIMIT,
    FakeChannel,
    FakeGuild,
    FakeUser,
    Json,
    member,
    snowflake,
)

APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5
GUILD, BOT_DM = 0, 1  # interaction contexts
BUTTON = 2
CHAT_INPUT, MESSAGE_COMMAND = 1, 3
OPTION_ATTACHMENT = 11
TEXT_INPUT = 4


@dataclass
class InteractionState:
    """Everything the bot did with one interaction token."""

    id: int
    token: str
    user: FakeUser
    guild: FakeGuild | None  # None: the user's DM with the bot
    channel: FakeChannel
    dispatched_at: float = field(default_factory=time.monotonic)
    callback: Json | None = None
    callback_at: float | None = None
    original: Json | None = None
    followups: list[Json] = field(default_factory=list)
    modal: Json | None = None
    message: Json | None = None  # a button press: the message the button is on
    expired: bool = False
    command: str = ""  # as Discord shows it: "/detect", "Detect objects…"

    @property
    def acknowledged(self) -> bool:
        return self.callback is not None


def _base(
    *,
    kind: int,
    app_id: int,
    user: FakeUser,
    guild: FakeGuild | None,
    channel: FakeChannel,
    data: Json,
) -> tuple[InteractionState, Json]:
    """An interaction in `guild`'s `channel`, or (guild None) in the user's DM with the bot,
    where Discord sends a `user` instead of a `member` and no guild at all."""
    name = data.get("name", "")
    state = InteractionState(
        id=snowflake(),
        token="itk-" + secrets.token_urlsafe(24),
        user=user,
        guild=guild,
        channel=channel,
        command=f"/{name}" if data.get("type") == CHAT_INPUT else name,
    )
    payload: Json = {
        "id": str(state.id),
        "application_id": str(app_id),
        "type": kind,
        "token": state.token,
        "version": 1,
        "channel_id": str(channel.id),
        "locale": user.locale,
        "app_permissions": str((1 << 53) - 1),
        "entitlements": [],
        "data": data,
    }
    if guild is None:
        payload.update(
            channel=dm_channel(channel.id, user),
            user=user.payload(),
            attachment_size_limit=DEFAULT_UPLOAD_LIMIT,
            authorizing_integration_owners={"1": str(user.id)},  # installed to the user
            context=BOT_DM,
        )
    else:
        payload.update(
            guild_id=str(guild.id),
            guild={"id": str(guild.id), "locale": guild.locale, "features": []},
            channel=channel.payload(),
            member=member(user.payload(), permissions=user.permissions),
            guild_locale=guild.locale,
            attachment_size_limit=guild.filesize_limit,
            authorizing_integration_owners={"0": str(guild.id)},
            context=GUILD,
        )
    return state, payload


def dm_channel(channel_id: int, user: FakeUser) -> Json:
    return {"id": str(channel_id), "type": 1, "recipients": [user.payload()], "flags": 0,
            "last_message_id": None}  # fmt: skip


def slash_payload(
    *,
    app_id: int,
    command: Json,
    options: dict[str, Any],
    attachments: dict[str, Json],
    user: FakeUser,
    guild: FakeGuild | None,
    channel: FakeChannel,
    focused: str | None = None,
) -> tuple[InteractionState, Json]:
    """A CHAT_INPUT invocation; option types come from the command the bot synced. With
    `focused`, the autocomplete request Discord sends while that option is being typed."""
    declared = {o["name"]: o for o in command.get("options", [])}
    data_options: list[Json] = []
    resolved: dict[str, Json] = {}
    for name, value in {**options, **attachments}.items():
        if name not in declared:
            raise AssertionError(f"/{command['name']} has no option {name!r}")
        kind = declared[name]["type"]
        if kind == OPTION_ATTACHMENT:
            resolved[value["id"]] = value
        sent = value["id"] if kind == OPTION_ATTACHMENT else value
        option: Json = {"name": name, "type": kind, "value": sent}
        if name == focused:
            option["focused"] = True
        data_options.append(option)
    data: Json = {
        "id": command["id"],
        "name": command["name"],
        "type": CHAT_INPUT,
        "options": data_options,
    }
    if resolved:
        data["resolved"] = {"attachments": resolved}
    if command.get("guild_id"):
        data["guild_id"] = command["guild_id"]
    kind = APPLICATION_COMMAND if focused is None else AUTOCOMPLETE
    return _base(kind=kind, app_id=app_id, user=user, guild=guild, channel=channel, data=data)


def message_command_payload(
    *,
    app_id: int,
    command: Json,
    target: Json,
    user: FakeUser,
    guild: FakeGuild,
    channel: FakeChannel,
) -> tuple[InteractionState, Json]:
    data: Json = {
        "id": command["id"],
        "name": command["name"],
        "type": MESSAGE_COMMAND,
        "target_id": target["id"],
        "resolved": {"messages": {target["id"]: target}},
    }
    if command.get("guild_id"):
        data["guild_id"] = command["guild_id"]
    return _base(
        kind=APPLICATION_COMMAND, app_id=app_id, user=user, guild=guild, channel=channel, data=data
    )


def component_payload(
    *,
    app_id: int,
    message: Json,
    custom_id: str,
    user: FakeUser,
    guild: FakeGuild,
    channel: FakeChannel,
) -> tuple[InteractionState, Json]:
    """A press on one of a message's buttons."""
    state, payload = _base(
        kind=MESSAGE_COMPONENT,
        app_id=app_id,
        user=user,
        guild=guild,
        channel=channel,
        data={"custom_id": custom_id, "component_type": BUTTON},
    )
    payload["message"] = message
    state.message = message
    return state, payload


def buttons(message: Json) -> dict[str, str]:
    """A message's buttons: label → custom_id."""
    out: dict[str, str] = {}
    for row in message.get("components") or []:
        for child in row.get("components") or []:
            if child.get("type") == BUTTON and child.get("custom_id"):
                out[child.get("label") or child["custom_id"]] = child["custom_id"]
    return out


def _fill_inputs(component: Json, values: dict[str, str], label: str = "") -> Json:
    """Turn the modal the bot sent into the submitted shape, typing `values` into inputs."""
    if component.get("type") == TEXT_INPUT:
        custom_id = component["custom_id"]
        label = component.get("label") or label
        # Tests may key values by custom_id or by the visible label.
        value = values.get(custom_id, values.get(label, ""))
        return {"type": TEXT_INPUT, "custom_id": custom_id, "value": value}
    out: Json = {"type": component.get("type")}
    if "id" in component:
        out["id"] = component["id"]
    if "component" in component:  # Label (type 18) wraps one input
        out["component"] = _fill_inputs(component["component"], values, component.get("label", ""))
    if "components" in component:
        out["components"] = [_fill_inputs(c, values) for c in component["components"]]
    return out


def modal_submit_payload(
    *, app_id: int, parent: InteractionState, values: dict[str, str]
) -> tuple[InteractionState, Json]:
    if parent.modal is None:
        raise AssertionError("the bot did not answer that interaction with a modal")
    data: Json = {
        "custom_id": parent.modal["custom_id"],
        "components": [_fill_inputs(c, values) for c in parent.modal.get("components", [])],
    }
    state, payload = _base(
        kind=MODAL_SUBMIT,
        app_id=app_id,
        user=parent.user,
        guild=parent.guild,
        channel=parent.channel,
        data=data,
    )
    state.command = parent.command
    return state, payload
