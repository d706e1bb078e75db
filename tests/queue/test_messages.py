"""The wire types: JSON round trips, and every decoding problem is a MalformedMessage."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from inference.detection import Detection
from inference.display import DisplayPicture
from inference.errors import (
    InvalidParameter,
    JobTimedOut,
    MalformedMessage,
    UnknownTask,
)
from inference.queue.keys import DM_GUILD
from inference.queue.messages import (
    Job,
    JobResult,
    WorkerInfo,
    salvage_reply_address,
)
from inference.segmentation import pack_mask
from inference.tasks import NOTE_FIELD, InferenceResult, Task, TaskSpec


def make_job(**kw: object) -> Job:
    spec = TaskSpec.build("detect", objects="cat ; dog", language="de")
    defaults: dict[str, object] = {
        "guild_id": 123456789012345678,
        "user_id": 42,
        "channel_id": 7,
        "reply_to": "bot-1",
        "deadline_s": 60,
        "context": {"interaction_id": "1", "token": "abc"},
    }
    defaults.update(kw)
    return Job.new(spec, **defaults)  # type: ignore[arg-type]


def test_job_round_trip() -> None:
    job = make_job()
    again = Job.from_json(job.to_json())
    assert again == job
    assert again.guild_id == "123456789012345678"  # snowflakes travel as text
    assert again.spec.objects == ("cat", "dog")
    assert job.deadline_at == pytest.approx(job.created_at + 60)


def test_dm_jobs_share_one_pseudo_guild() -> None:
    assert make_job(guild_id=None).guild_id == DM_GUILD


@given(
    question=st.text(min_size=1, max_size=100).filter(lambda s: s.strip()),
    context=st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=5),
    created_at=st.floats(min_value=0, max_value=4e9),
)
def test_job_round_trip_any_text(question: str, context: dict[str, str], created_at: float) -> None:
    spec = TaskSpec.build("answer", question=question)
    job = Job.new(
        spec, guild_id=1, user_id=2, reply_to="b", deadline_s=1, context=context, now=created_at
    )
    assert Job.from_json(job.to_json()) == job


def _mutated(**changes: object) -> str:
    data = json.loads(make_job().to_json())
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        b"\xff\xfe",
        "[1, 2]",
        _mutated(v=3),
        _mutated(picture="a:b"),  # would escape its key
        _mutated(index=-1),
        _mutated(v=...),
        _mutated(job_id=...),
        _mutated(reply_to=...),
        _mutated(user_id=42),  # ids must be text
        _mutated(guild_id="a:b"),  # would escape its key
        _mutated(deadline_at="soon"),
        _mutated(deadline_at=True),
        _mutated(attempt=1.5),
        _mutated(context={"a": 1}),
        _mutated(context=[]),
        _mutated(objects="cat"),
        "[" * 100_000,  # deep nesting: RecursionError inside json.loads
        _mutated(created_at=10**400),  # a JSON integer no float can hold
    ],
)
def test_bad_job_messages_are_malformed(raw: str | bytes) -> None:
    with pytest.raises(MalformedMessage):
        Job.from_json(raw)


def test_task_parameters_are_validated_again_on_decode() -> None:
    with pytest.raises(UnknownTask):
        Job.from_json(_mutated(task="panoptic"))
    with pytest.raises(InvalidParameter):
        Job.from_json(_mutated(max_new_tokens=100_000))


def test_salvage_reply_address() -> None:
    raw = _mutated(v=99)
    assert salvage_reply_address(raw) == (job_id_of(raw), "bot-1", make_job().context)
    assert salvage_reply_address("garbage") is None
    assert salvage_reply_address(_mutated(reply_to=...)) is None


def job_id_of(raw: str) -> str:
    return str(json.loads(raw)["job_id"])


def test_result_round_trip_with_detections() -> None:
    job = make_job()
    inference = InferenceResult(
        task=Task.DETECT, text="<loc0001>...", detections=(Detection("cat", (1, 2, 3, 4)),)
    )
    result = JobResult.success(job, inference, worker_id="w1", queue_wait_s=0.5, run_s=0.25)
    again = JobResult.from_json(result.to_json())
    assert again == result
    assert again.task is Task.DETECT  # typed end to end, not a string to compare
    assert json.loads(result.to_json())["task"] == "detect"  # the wire form is unchanged
    assert again.ok and again.exception() is None
    assert again.context == job.context


def test_a_detect_result_carries_its_display_copy_and_older_results_still_read() -> None:
    job = make_job()
    display = DisplayPicture(b"\xff\xd8\xff display copy", (7900, 5000))
    inference = InferenceResult(Task.DETECT, "", (Detection("cat", (1, 2, 3, 4)),), display=display)
    result = JobResult.success(job, inference, worker_id="w1")
    again = JobResult.from_json(result.to_json())
    assert again == result and again.display == display
    # A worker from before the display copy sends no such field: the same version reads.
    older = json.loads(result.to_json())
    del older["display"]
    assert older["v"] == 1 and JobResult.from_json(json.dumps(older)).display is None
    # A copy that does not decode is a malformed message, like any other field.
    older["display"] = {"data": "not base64!", "original_size": [1, 1]}
    with pytest.raises(MalformedMessage):
        JobResult.from_json(json.dumps(older))


def test_a_segment_result_carries_packed_masks_and_the_workers_note() -> None:
    job = make_job()
    mask = pack_mask(Image.new("L", (64, 64), 200))
    inference = InferenceResult(
        task=Task.SEGMENT,
        text="",
        detections=(Detection("cat", (1, 2, 30, 40), mask), Detection("dog", (5, 5, 9, 9))),
        note="masks need the decoder",
    )
    result = JobResult.success(job, inference, worker_id="w1")
    again = JobResult.from_json(result.to_json())
    assert again == result and again.detections[0].mask == mask
    assert again.context[NOTE_FIELD] == "masks need the decoder"
    assert len(result.to_json()) < 1_000  # 64 × 64 bytes, packed: never a raster
    # The wire form of a detect result is unchanged: no "mask" key without a mask.
    assert "mask" not in json.dumps(again.detections[1].to_dict())


def test_failure_result_maps_back_to_its_error_class() -> None:
    job = make_job()
    result = JobResult.failure(job.job_id, job.context, JobTimedOut(), task=job.spec.task)
    again = JobResult.from_json(result.to_json())
    assert not again.ok
    err = again.exception()
    assert isinstance(err, JobTimedOut)
    assert str(err) == JobTimedOut.default_message


@pytest.mark.parametrize(
    "change",
    [
        {"v": 0},
        {"detections": [{"label": "x"}]},
        {"text": None},
        {"finished_at": "x"},
        {"task": 3},
        {"detections": [{"label": "x", "box": [0, 0, 1, 1], "mask": 7}]},
        {"detections": [{"label": "x", "box": [0, 0, 1, 1], "mask": "A" * 10_000}]},
    ],
)
def test_bad_results_are_malformed(change: dict[str, object]) -> None:
    data = json.loads(JobResult.failure("j", {}, JobTimedOut()).to_json())
    data.update(change)
    with pytest.raises(MalformedMessage):
        JobResult.from_json(json.dumps(data))


def test_a_result_of_a_task_this_version_does_not_know_is_still_delivered() -> None:
    data = json.loads(JobResult.failure("j", {"rid": "r"}, JobTimedOut()).to_json())
    data.update(task="paint", error=None, message=None, text="a picture")
    result = JobResult.from_json(json.dumps(data))
    assert (result.task, result.text, result.context) == (None, "a picture", {"rid": "r"})


def test_worker_info_round_trip() -> None:
    info = WorkerInfo("w1", "host", "google/paligemma2-3b-mix-448", ("caption", "ocr"), 1.0, 8)
    assert WorkerInfo.from_json(info.to_json()) == info
    with pytest.raises(MalformedMessage):
        WorkerInfo.from_json('{"v": 1}')
