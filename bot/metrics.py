"""What the bot reports to Prometheus (served by `inference.ops` from `python -m bot`).

Requests by kind (mention, slash command, context menu) and outcome (queued, refused,
busy: the queue's pictures at MAX_QUEUED_BYTES or Redis at its maxmemory, error); how
long interactions took to be acknowledged (Discord allows 3 s); answers
delivered or not; Discord HTTP errors by status (REST and interaction webhooks) and
rate limits met. Guilds and users
never become labels.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord.webhook.async_ import AsyncWebhookAdapter, async_context
from prometheus_client import CollectorRegistry, Counter, Histogram

ACK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0)
# discord.py's own words when it waits out a 429 (REST and interaction webhooks).
_RATE_LIMIT_LOGGERS = ("discord.http", "discord.webhook.async_")


class BotMetrics:
    """The bot's metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "palicord_bot_requests",
            "Requests the bot took, by kind and outcome",
            ["kind", "outcome"],
            registry=r,
        )
        self.ack = Histogram(
            "palicord_interaction_ack_seconds",
            "From an interaction's creation to the bot's acknowledgement",
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.answers = Counter(
            "palicord_bot_answers",
            "Final answers, by whether Discord took them",
            ["outcome"],
            registry=r,
        )
        self.cache_hits = Counter(
            "palicord_bot_cache_answers",
            "Images answered from the shared result cache, without queueing",
            registry=r,
        )
        self.http_errors = Counter(
            "palicord_discord_http_errors",
            "Discord REST calls that failed, by HTTP status",
            ["status"],
            registry=r,
        )
        self.rate_limits = Counter(
            "palicord_discord_rate_limits", "Times Discord made the bot wait (HTTP 429)", registry=r
        )

    def watch_client(self, client: discord.Client) -> None:
        """Count the REST errors of `client` and the rate limits discord.py logs. Interaction
        responses and follow-ups do not go through `client.http`: see `watch_webhooks`."""
        request = client.http.request

        async def counted(*args: object, **kwargs: object) -> object:
            try:
                return await request(*args, **kwargs)  # type: ignore[arg-type]
            except discord.HTTPException as exc:
                self.http_errors.labels(str(exc.status)).inc()
                raise

        client.http.request = counted  # type: ignore[method-assign]
        for name in _RATE_LIMIT_LOGGERS:
            logging.getLogger(name).addFilter(self._count_rate_limits)

    def watch_webhooks(self) -> None:
        """Count the errors of interaction responses, follow-ups and their edits, which
        discord.py sends through its webhook adapter (a context variable). The counting
        adapter applies to this context and to every task started from it afterwards:
        call this at the bot's start-up, before the gateway dispatches events."""
        async_context.set(_CountingWebhookAdapter(self.http_errors))

    def _count_rate_limits(self, record: logging.LogRecord) -> bool:
        # One line per 429 ("... responded with 429. Retrying in ..."); a global limit
        # adds a second line that must not count twice.
        if "responded with 429" in record.getMessage():
            self.rate_limits.inc()
        return True


class _CountingWebhookAdapter(AsyncWebhookAdapter):
    def __init__(self, errors: Counter) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # discord.py leaves it untyped
        self._errors = errors

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().request(*args, **kwargs)
        except discord.HTTPException as exc:
            self._errors.labels(str(exc.status)).inc()
            raise
