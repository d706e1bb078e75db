"""The job queue between the bot and the workers. Torch-free: both programs import it.

messages.py    the wire types (Job, JobResult, WorkerInfo, JobState), versioned JSON
keys.py        every Redis key name, the bot's own included, under one prefix
settings.py    QueueSettings and the image limits both programs apply
connection.py  connect(), and redis_boundary(): where Redis errors become QueueUnavailable
scripts.py     typed wrappers of the Lua scripts in lua/ (fair take, leases, settle...)
records.py     one record per request: its items, reply address and outcomes, from
               intake to the answer (one stream entry when the last outcome is in)
memory.py      the pictures (each kept once, by digest) and answers both programs share
client.py      QueueClient, the bot's side: submit, status, cancel, results, and the two
               stores above
"""

from inference.queue.client import Delivery, JobStatus, QueueClient
from inference.queue.connection import connect, redis_boundary
from inference.queue.keys import DM_GUILD, Keys
from inference.queue.messages import Job, JobResult, JobState, WorkerInfo
from inference.queue.records import RequestRecord, RequestRecords
from inference.queue.settings import QueueSettings

__all__ = [
    "DM_GUILD",
    "Delivery",
    "Job",
    "JobResult",
    "JobState",
    "JobStatus",
    "Keys",
    "QueueClient",
    "QueueSettings",
    "RequestRecord",
    "RequestRecords",
    "WorkerInfo",
    "connect",
    "redis_boundary",
]
