"""Every Redis key Palicord uses (the queue's and the bot's own), built here and nowhere else.

All keys share one prefix. The default prefix holds a Redis Cluster hash tag
(`{palicord}`), so every key lands in one slot and the multi-key Lua scripts also run on
a cluster. The Lua scripts build per-guild and per-job keys at run time; they get their
key builders from `lua_prelude()`, generated from the same templates, so a key name is
spelled exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "{palicord}:"
# Direct messages and group DMs have no guild: a job's guild_id says DM_GUILD, and in the
# queue each person is a unit of fairness of their own (`fairness_unit`).
DM_GUILD = "dm"
# Fairness units of background work start with this (the Lua tests the same three chars).
BACKGROUND_PREFIX = "bg."

# name -> template; `{}` stands for the dynamic parts, in order.
_TEMPLATES: dict[str, str] = {
    # list used as a ring of guild ids that have queued jobs (head = next to serve)
    "guild_ring": "guilds",
    # the same for background work (alt text), served only in slots interactive jobs
    # leave; its units are background_unit(guild)
    "background_ring": "guilds:background",
    # per guild: list used as a ring of user ids with queued jobs
    "guild_users": "g:{}:users",
    # hash guild id -> number of job ids in its users' lines (for place estimates)
    "guild_queued": "queued:guild",
    # the place-in-line index (lua/lib.lua): a Fenwick tree over the ring visits each
    # waiting guild needs, and what each guild put in it ("queued:weight")
    "place_rank": "place:rank",
    "place_guild": "place:guild",
    # the ring's order as a sorted set guild -> sequence number, and the sequence
    "ring_order": "place:ring",
    "ring_seq": "place:seq",
    # per guild and user: FIFO list of job ids
    "user_queue": "g:{}:u:{}",
    # hash: data (job JSON), g, u, t (task), dl (deadline_at), eq (enqueued at), a (attempt),
    # p (its picture's digest), rq and ri (its request and item index)
    "job": "job:{}",
    # a version 1 job's own copy of its picture (read for an upgrade; never written now)
    "image": "img:{}",
    # one record per request (inference.queue.records), hash: data (the record's JSON),
    # n (items), left (items without an outcome), to (the bot instance to tell),
    # o<i> (item i's outcome), sent (the answer was delivered)
    "request_record": "req:{}",
    # per bot instance: sorted set request id -> opened at, for the requests it opened and
    # has not finished queueing, so a restarted bot can answer them (records.orphaned)
    "opening": "req-opening:{}",
    # hash digest -> how many queued or running jobs need that kept picture: a picture
    # with a count is never dropped from the picture store (lua/stash.lua)
    "picture_pins": "pins:picture",
    # set with NX when a job's single outcome is decided (result published or cancelled)
    "done": "done:{}",
    # sorted set job id -> lease deadline (server clock), and hash job id -> worker id
    "leases": "leases",
    "lease_owner": "lease-owner",
    # outstanding (queued or running) counts, for the caps
    "pending": "pending",
    # bytes of the pictures of queued and running jobs (MAX_QUEUED_BYTES)
    "queued_bytes": "queued:bytes",
    "guild_pending": "pending:guild",
    # per person, across every guild and DM (older versions counted "guild:user")
    "user_pending": "pending:user",
    "weights": "weights",
    # a short list workers block on (BLPOP) so they wake as soon as a job arrives
    "wakeup": "wakeup",
    "dead_letter": "dead",
    # sorted set worker id -> heartbeat expiry; plus one JSON key per worker
    "workers": "workers",
    "worker": "worker:{}",
    # one durable stream of results per bot instance
    "results": "results:{}",
    # --- the bot's own state, beside the queue's under the same prefix ---
    # string with a TTL: present while the user must wait
    "cooldown": "bot:cooldown:{}",
    # counter of images queued for a guild (or a person, "user-<id>") on a UTC day
    "daily_usage": "bot:usage:{}:{}",
    # hash of a guild's /settings
    "guild_config": "bot:guild:{}",
    # the previous release's per-request outcomes (read once on upgrade: records.adopt)
    "request": "bot:request:{}",
    # string with a TTL: one bot task is sending this request's answer (bot.delivery)
    "sending": "bot:sending:{}",
    # sorted set job id -> deadline, for /queue
    "user_jobs": "bot:user-jobs:{}",
    # automatic alt text (bot.alt_text): the set of people who opted out; per guild, set
    # once its first description told people how to opt out; per channel and UTC hour,
    # how many pictures were described; per described message, its reply (JSON), and
    # while it is being re-posted, a short lock (one press re-posts, not two)
    "alt_opt_out": "bot:alt:opt-out",
    "alt_notice": "bot:alt:notice:{}",
    "alt_hourly": "bot:alt:hour:{}:{}",
    "alt_reply": "bot:alt:reply:{}",
    "alt_reposting": "bot:alt:reposting:{}",
    # --- what both programs remember about pictures (inference.queue.memory) ---
    # per kind ("picture", "result") and id: the bytes, with a TTL; an index sorted by
    # when each was stored, their sizes, and the total, to keep the kind within its budget
    "stash": "mem:{}:{}",
    "stash_index": "mem:{}:index",
    "stash_sizes": "mem:{}:sizes",
    "stash_bytes": "mem:{}:bytes",
    # the kind's byte budget as last given (so that a picture a job stops needing can be
    # dropped at once when the store is over it: lua/lib.lua drop_job)
    "stash_budget": "mem:{}:budget",
    # the previous release's per-instance intake records (read once on upgrade)
    "intake": "bot:intake:{}",
}

_PART_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


def fairness_unit(guild_id: str, user_id: str) -> str:
    """Whose turn a job waits for in the round robin between guilds: its guild's, or in
    DMs its person's own (no shared "dm" line where strangers' requests queue together)."""
    return f"{DM_GUILD}-{user_id}" if guild_id == DM_GUILD else guild_id


def background_unit(guild_id: str) -> str:
    """The fairness unit of a guild's background work (automatic alt text): its own line,
    in the background ring, with its own share of the per-guild cap, so it never crowds
    out the guild's members' own requests (lua/lib.lua `is_background`)."""
    return f"{BACKGROUND_PREFIX}{guild_id}"


def quota_scope(guild_id: int | None, user_id: int | None = None) -> str:
    """Who shares a daily quota: a guild's members; without a guild, one person (their
    own quota across every guild and DM, `USER_DAILY_QUOTA`)."""
    if guild_id is not None:
        return str(guild_id)
    return DM_GUILD if user_id is None else f"user-{user_id}"


def is_key_part(value: str) -> bool:
    """Whether `value` is safe inside a key (no `:`, braces or spaces)."""
    return _PART_RE.match(value) is not None


def check_part(value: str) -> str:
    """Return `value` if it is safe inside a key (see `is_key_part`), else raise."""
    if not is_key_part(value):
        raise ValueError(f"not a valid key part: {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder for one queue, under one prefix."""

    prefix: str = DEFAULT_PREFIX

    def _k(self, name: str, *parts: str) -> str:
        return self.prefix + _TEMPLATES[name].format(*(check_part(p) for p in parts))

    @property
    def guild_ring(self) -> str:
        return self._k("guild_ring")

    @property
    def background_ring(self) -> str:
        return self._k("background_ring")

    def guild_users(self, guild: str) -> str:
        return self._k("guild_users", guild)

    def user_queue(self, guild: str, user: str) -> str:
        return self._k("user_queue", guild, user)

    def job(self, job_id: str) -> str:
        return self._k("job", job_id)

    def image(self, job_id: str) -> str:
        return self._k("image", job_id)

    def request_record(self, request_id: str) -> str:
        return self._k("request_record", request_id)

    def opening(self, instance_id: str) -> str:
        return self._k("opening", instance_id)

    @property
    def picture_pins(self) -> str:
        return self._k("picture_pins")

    def done(self, job_id: str) -> str:
        return self._k("done", job_id)

    @property
    def guild_queued(self) -> str:
        return self._k("guild_queued")

    @property
    def leases(self) -> str:
        return self._k("leases")

    @property
    def lease_owner(self) -> str:
        return self._k("lease_owner")

    @property
    def pending(self) -> str:
        return self._k("pending")

    @property
    def queued_bytes(self) -> str:
        return self._k("queued_bytes")

    @property
    def guild_pending(self) -> str:
        return self._k("guild_pending")

    @property
    def user_pending(self) -> str:
        return self._k("user_pending")

    @property
    def weights(self) -> str:
        return self._k("weights")

    @property
    def wakeup(self) -> str:
        return self._k("wakeup")

    @property
    def dead_letter(self) -> str:
        return self._k("dead_letter")

    @property
    def workers(self) -> str:
        return self._k("workers")

    def worker(self, worker_id: str) -> str:
        return self._k("worker", worker_id)

    def results(self, reply_to: str) -> str:
        return self._k("results", reply_to)

    def cooldown(self, user_id: int) -> str:
        return self._k("cooldown", str(user_id))

    def daily_usage(self, guild_id: int | None, day: str, *, user_id: int | None = None) -> str:
        """A guild's count for `day`; without a guild, the person's own, when given."""
        return self._k("daily_usage", quota_scope(guild_id, user_id), day)

    def guild_config(self, guild_id: int) -> str:
        return self._k("guild_config", str(guild_id))

    def request(self, request_id: str) -> str:
        return self._k("request", request_id)

    def sending(self, request_id: str) -> str:
        return self._k("sending", request_id)

    def user_jobs(self, user_id: int) -> str:
        return self._k("user_jobs", str(user_id))

    def intake(self, instance_id: str) -> str:
        return self._k("intake", instance_id)

    @property
    def alt_opt_out(self) -> str:
        return self._k("alt_opt_out")

    def alt_notice(self, guild_id: int) -> str:
        return self._k("alt_notice", str(guild_id))

    def alt_hourly(self, channel_id: int, hour: str) -> str:
        return self._k("alt_hourly", str(channel_id), hour)

    def alt_reply(self, message_id: int) -> str:
        return self._k("alt_reply", str(message_id))

    def alt_reposting(self, message_id: int) -> str:
        return self._k("alt_reposting", str(message_id))

    def stash(self, kind: str, item_id: str) -> str:
        return self._k("stash", kind, item_id)

    def stash_index(self, kind: str) -> str:
        return self._k("stash_index", kind)

    def stash_bytes(self, kind: str) -> str:
        return self._k("stash_bytes", kind)


def lua_prelude() -> str:
    """Lua functions `K.<name>(...)` that build the same keys, the prefix taken from ARGV[1]."""
    lines = ["local K = {}", "local P = ARGV[1]"]
    for name, template in _TEMPLATES.items():
        pieces = template.split("{}")
        args = [f"a{i}" for i in range(len(pieces) - 1)]
        expr = " .. ".join(
            part
            for i, piece in enumerate(pieces)
            for part in ([_lua_str(piece)] + ([args[i]] if i < len(args) else []))
            if part != "''"
        )
        lines.append(f"K.{name} = function({', '.join(args)}) return P .. {expr} end")
    return "\n".join(lines) + "\n"


def _lua_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
