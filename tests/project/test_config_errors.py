"""Configuration errors never echo a value: every entry point (`python -m bot`,
`python -m inference.worker`, the offline CLI `python -m inference`, `python -m sandbox`),
run as a real process with recognisable secrets in its environment, answers each kind of
wrong setting (a bad number, a field's constraint, a field's own validator, a cross-field
rule, a REDIS_URL that redis-py would refuse later) with exit status 2 and one line naming
the setting, no traceback, and not six characters in a row of any secret or of the wrong
value itself; a DEVICE torch refuses, once the model loads, likewise in one line (exit 1).
The bot's log filter covers every discord.py logger, child loggers included.

Each case fails on the code before this test: pydantic's message quoted the inputs (all
of them, secrets included, for a cross-field rule), a wrong SHARD_IDS or WORKER_ID was
quoted by its own validator, a database number on a cluster ended in redis-py's
traceback, and the filter sat on `discord.http` and `discord.webhook` only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.__main__ import REDACTED, redact
from bot.settings import BotSettings

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "shapes.png"

DISCORD_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GsEcRt.DiScOrDtOkEnSeCrEtVaLuE12345"
HF_TOKEN = "hf_HuGgInGfAcEsEcReTtOkEn987"
REDIS_PASSWORD = "ReDiSpAsSwOrD4242"
SECRETS = (DISCORD_TOKEN, HF_TOKEN, REDIS_PASSWORD)


def redis_url(path: str = "/0", password: str = REDIS_PASSWORD) -> str:
    return f"redis://:{password}@127.0.0.1:6379{path}"


BOT = ("-m", "bot")
WORKER = ("-m", "inference.worker", "--engine", "noop")
CLI = ("-m", "inference", "caption", str(SAMPLE))
SANDBOX = ("-m", "sandbox")
CLUSTER_DB = {"REDIS_CLUSTER": "true", "KEY_PREFIX": "{pc}:", "REDIS_URL": redis_url("/3")}
# A "/" in the password puts part of it in the URL's port, which the URL parser quotes.
SLASH_URL = {"REDIS_URL": redis_url(password="ReDiS/pAsSwOrD4242")}

# (program, what is wrong, the setting named, a wrong value that must not show either)
CASES = [
    # a bad number
    (BOT, {"MAX_PENDING": "lotsofjobs"}, "MAX_PENDING", "lotsofjobs"),
    (WORKER, {"BATCH_SIZE": "eightyish"}, "BATCH_SIZE", "eightyish"),
    (CLI, {"BATCH_SIZE": "eightyish"}, "BATCH_SIZE", "eightyish"),
    (SANDBOX, {"SANDBOX_PORT": "eightyeighty"}, "SANDBOX_PORT", "eightyeighty"),
    (SANDBOX, {"MAX_PENDING": "lotsofjobs"}, "MAX_PENDING", "lotsofjobs"),
    # a field's constraint, a literal
    (BOT, {"MAX_IMAGE_BYTES": "-123456"}, "MAX_IMAGE_BYTES", "-123456"),
    (WORKER, {"QUANTIZATION": "threebit"}, "QUANTIZATION", "threebit"),
    (CLI, {"MAX_IMAGE_PIXELS": "-987654"}, "MAX_IMAGE_PIXELS", "-987654"),
    # a field's own validator
    (BOT, {"SHARD_COUNT": "4", "SHARD_IDS": "0,seventeen"}, "SHARD_IDS", "seventeen"),
    (WORKER, {"WORKER_ID": "gpu:rack{7}"}, "WORKER_ID", "rack{7}"),
    (SANDBOX, {"SHARD_COUNT": "4", "SHARD_IDS": "0,seventeen"}, "SHARD_IDS", "seventeen"),
    # a cross-field rule
    (BOT, {"SHARD_IDS": "0,1"}, "SHARD_COUNT", None),
    (BOT, {"SHARD_COUNT": "2", "SHARD_IDS": "0-5"}, "SHARD_IDS", None),
    (BOT, {"IMAGE_TTL_S": "60"}, "IMAGE_TTL_S", None),
    (BOT, {"REDIS_CLUSTER": "true", "KEY_PREFIX": "plainprefix:"}, "KEY_PREFIX", "plainprefix"),
    (WORKER, {"IMAGE_TTL_S": "60"}, "IMAGE_TTL_S", None),
    (WORKER, {"LEASE_S": "30", "MAX_BATCH_RUN_S": "20"}, "MAX_BATCH_RUN_S", None),
    (WORKER, {"IDLE_WAIT_S": "20"}, "IDLE_WAIT_S", None),
    (SANDBOX, {"SHARD_IDS": "0,1"}, "SHARD_COUNT", None),
    (SANDBOX, {"IMAGE_TTL_S": "60"}, "IMAGE_TTL_S", None),
    # what redis-py would refuse later: a database on a cluster, a password it misreads
    (BOT, CLUSTER_DB, "REDIS_CLUSTER", None),
    (WORKER, CLUSTER_DB, "REDIS_CLUSTER", None),
    (SANDBOX, CLUSTER_DB, "REDIS_CLUSTER", None),
    (BOT, SLASH_URL, "REDIS_URL", "pAsSwOrD4242"),
    (WORKER, SLASH_URL, "REDIS_URL", "pAsSwOrD4242"),
    # a missing secret
    (BOT, {"DISCORD_TOKEN": ""}, "DISCORD_TOKEN", None),
]


def clean_env(**settings: str) -> dict[str, str]:
    """Only what Python needs, the secrets, and `settings`: no developer's settings leak in."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env |= {"DISCORD_TOKEN": DISCORD_TOKEN, "HF_TOKEN": HF_TOKEN, "REDIS_URL": redis_url()}
    # Nothing is served or started: no metrics port, no Redis looked for by the sandbox.
    env |= {"HF_HUB_OFFLINE": "1", "METRICS_PORT": "0", "LOCAL_REDIS_PORT": "1"}
    env |= settings
    return {k: v for k, v in env.items() if v}


def pieces(secret: str, size: int = 6) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("program", "settings", "named", "wrong"),
    CASES,
    ids=[f"{p[1]}-{'+'.join(s)}" for p, s, _, _ in CASES],
)
def test_a_wrong_setting_is_named_and_no_value_is_shown(
    program: tuple[str, ...],
    settings: dict[str, str],
    named: str,
    wrong: str | None,
    tmp_path: Path,
) -> None:
    done = subprocess.run(  # noqa: PLW1510 (the exit status is what is tested)
        [sys.executable, *program],
        env=clean_env(**settings),
        cwd=tmp_path,  # no .env of the developer's
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    # pydantic's own echo of the inputs: cut to a few characters around "...", it showed
    # the start of the first setting read and the end of the last, whatever they were.
    assert "input_value" not in output
    assert "bad configuration" in output and named in output, output
    lines = [line for line in output.splitlines() if "bad configuration" in line]
    assert len(lines) == 1, output
    for secret in (*SECRETS, *([wrong] if wrong else [])):
        shown = sorted(p for p in pieces(secret) if p in output)
        assert shown == [], output


@pytest.mark.slow  # imports torch: seconds per case
@pytest.mark.parametrize(
    "program",
    [WORKER[:2], CLI],  # the worker with its default engine, the model
    ids=["worker", "cli"],
)
@pytest.mark.parametrize("device", ["quantumchip", "cuda:99"])
def test_a_device_torch_refuses_ends_in_one_line(
    program: tuple[str, ...], device: str, tmp_path: Path
) -> None:
    """Refused when the model loads, by torch, in a traceback on the old code."""
    done = subprocess.run(  # noqa: PLW1510 (the exit status is what is tested)
        [sys.executable, *program],
        env=clean_env(DEVICE=device, MODEL_ID=str(ROOT / "models" / "palicord-tiny")),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output and "DEVICE" in output, output
    for secret in (*SECRETS, device):
        assert sorted(p for p in pieces(secret) if p in output) == [], output


def test_every_secret_setting_is_in_the_test() -> None:
    """The secrets above are every SecretStr setting the programs read (fails if a new one
    is added without a case here; passes on the code before this change too)."""
    from inference.settings import WorkerSettings

    secret = {
        name.upper()
        for cls in (BotSettings, WorkerSettings)
        for name, field in cls.model_fields.items()
        if "SecretStr" in repr(field.annotation)
    }
    assert secret == {"DISCORD_TOKEN", "HF_TOKEN", "REDIS_URL"}


DEBUG_LOGS = """
import logging
from bot.__main__ import setup_logging
from inference.ops import use_log_format
setup_logging()
use_log_format({log_format!r})
logging.getLogger("discord").setLevel(logging.DEBUG)
token = {token!r}
webhook = f"https://discord.com/api/v10/webhooks/1234567890/{{token}}/messages/@original"
callback = f"https://discord.com/api/v10/interactions/987654321/{{token}}/callback"
for name in ("discord.webhook.async_", "discord.webhook.sync", "discord.http",
             "discord.gateway", "discord.client", "discord.state"):
    log = logging.getLogger(name)
    log.debug("Webhook ID %s with %s %s has returned status code %s", 1, "PATCH", webhook, 200)
    log.debug("%s %s has received %s", "POST", callback, {{}})
logging.getLogger("discord.gateway").debug(
    "For Shard ID %s: WebSocket Event: %s", 0,
    {{"t": "INTERACTION_CREATE", "d": {{"id": "1", "token": token}}}},
)
try:
    raise OSError(f"404, message='Not Found', url='{{webhook}}'")
except OSError:
    logging.getLogger("discord.webhook.async_").exception("send failed")
print("logged", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_discord_child_loggers_at_debug_never_print_an_interaction_token(log_format: str) -> None:
    token = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5OnNlY3JldHRva2VuX2Zvcl90ZXN0cw"
    done = subprocess.run(  # noqa: PLW1510 (the exit status is what is tested)
        [sys.executable, "-c", DEBUG_LOGS.format(token=token, log_format=log_format)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "logged" in done.stdout
    assert "discord.webhook.async_" in done.stderr and "send failed" in done.stderr
    assert "OSError: 404" in done.stderr  # the traceback is kept, cleaned
    assert done.stderr.count(REDACTED) >= 14, done.stderr
    assert sorted(p for p in pieces(token) if p in done.stderr) == [], done.stderr


def test_the_bot_token_and_redis_password_are_redacted_wherever_they_appear() -> None:
    """Passes on the old code's `redact()` for URLs; the settings' secrets are new."""
    settings = BotSettings(
        _env_file=None, discord_token=DISCORD_TOKEN, redis_url=redis_url("/0?x=1")
    )
    assert set(settings.secrets()) == {DISCORD_TOKEN, REDIS_PASSWORD}
    text = f"Authorization: Bot {DISCORD_TOKEN} via {redis_url()}"
    assert redact(text, settings.secrets()) == (
        f"Authorization: Bot {REDACTED} via redis://:{REDACTED}@127.0.0.1:6379/0"
    )


def test_the_compose_health_check_keeps_the_password_off_the_command_line() -> None:
    """Fails on the old compose file (`redis-cli -a "$REDIS_PASSWORD"`)."""
    import yaml

    redis = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())["services"][
        "redis"
    ]
    check = " ".join(redis["healthcheck"]["test"])
    assert "REDIS_PASSWORD" not in check and " -a " not in check and "--pass" not in check
    assert redis["environment"]["REDISCLI_AUTH"] == "${REDIS_PASSWORD}"


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_cli_authenticates_from_rediscli_auth(tmp_path: Path) -> None:
    """What the health check relies on, against a real redis-server with a password
    (a fact about redis-cli: passes on the old code too)."""
    from sandbox.stack import free_port

    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", REDIS_PASSWORD],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not port_open(port) and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        ping = ["redis-cli", "-p", str(port), "ping"]
        env = clean_env()
        refused = subprocess.run(
            ping, check=False, env=env, capture_output=True, text=True, timeout=10
        )
        assert "PONG" not in refused.stdout
        env["REDISCLI_AUTH"] = REDIS_PASSWORD
        answered = subprocess.run(
            ping, check=False, env=env, capture_output=True, text=True, timeout=10
        )
        assert answered.stdout.strip() == "PONG"
    finally:
        server.terminate()
        server.wait(10)
