"""Where an answer goes, carried inside each job's context so that any bot run, even one
started after the job was queued, can deliver it."""

from __future__ import annotations

from dataclasses import dataclass

from bot.settings import DISCORD_UPLOAD_LIMIT_BYTES
from inference.errors import MalformedMessage

# The queue caps each context item at 512 characters (key + value).
_MAX_LABEL_CHARS = 100
_MAX_URL_CHARS = 480


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """The bot's progress message for a request and how to reach it again."""

    channel_id: int
    user_id: int
    guild_id: int | None
    message_id: int | None  # the message that shows progress and then the answer
    app_id: int | None = None  # interaction webhook: application id + token
    token: str | None = None
    issued_at: float = 0.0  # epoch seconds the interaction token was issued
    reply_to_id: int | None = None  # the user's message, for a mention
    # Largest file the answer may attach there: boosted guilds allow more than the default.
    upload_limit_bytes: int = DISCORD_UPLOAD_LIMIT_BYTES

    @property
    def is_interaction(self) -> bool:
        return self.app_id is not None and self.token is not None


@dataclass(frozen=True, slots=True)
class ItemContext:
    """One image of one request: which, of how many, and where the request's answer goes."""

    request_id: str
    index: int
    count: int
    label: str
    image_url: str
    address: ReplyAddress

    def to_context(self) -> dict[str, str]:
        a = self.address
        out = {
            "rid": self.request_id,
            "i": str(self.index),
            "n": str(self.count),
            "label": self.label[:_MAX_LABEL_CHARS],
            "url": self.image_url if len(self.image_url) <= _MAX_URL_CHARS else "",
            "ch": str(a.channel_id),
            "u": str(a.user_id),
            "ul": str(a.upload_limit_bytes),
        }
        optional = {
            "g": a.guild_id,
            "mid": a.message_id,
            "app": a.app_id,
            "tok": a.token,
            "at": a.issued_at if a.is_interaction else None,
            "ref": a.reply_to_id,
        }
        out.update({k: str(v) for k, v in optional.items() if v is not None})
        return out

    @classmethod
    def from_context(cls, ctx: dict[str, str]) -> ItemContext:
        """Inverse of `to_context`; raises MalformedMessage on anything else."""

        def opt_int(key: str) -> int | None:
            return int(ctx[key]) if ctx.get(key) else None

        try:
            address = ReplyAddress(
                channel_id=int(ctx["ch"]),
                user_id=int(ctx["u"]),
                guild_id=opt_int("g"),
                message_id=opt_int("mid"),
                app_id=opt_int("app"),
                token=ctx.get("tok") or None,
                issued_at=float(ctx.get("at") or 0.0),
                reply_to_id=opt_int("ref"),
                upload_limit_bytes=opt_int("ul") or DISCORD_UPLOAD_LIMIT_BYTES,
            )
            item = cls(
                request_id=ctx["rid"],
                index=int(ctx["i"]),
                count=int(ctx["n"]),
                label=ctx.get("label", ""),
                image_url=ctx.get("url", ""),
                address=address,
            )
        except (KeyError, ValueError) as exc:
            raise MalformedMessage("A job's reply context is incomplete.") from exc
        if not 0 <= item.index < item.count:
            raise MalformedMessage("A job's reply context has a bad item index.")
        return item
