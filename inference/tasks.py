"""Tasks the engine serves, their PaliGemma 2 prompts, and the request/result types.

Torch-free: the bot validates a `TaskSpec` before it queues a job; the worker turns each
job it takes into an `InferenceRequest` for the engine, which answers with an
`InferenceResult`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from inference.detection import Detection
from inference.display import DisplayPicture
from inference.errors import InvalidParameter, UnknownTask, UnsupportedLanguage

# The 35 languages PaliGemma 2's multilingual captioning/VQA mixture was trained on.
LANGUAGES: frozenset[str] = frozenset(
    "ar bn cs da de el en es fa fi fil fr he hi hr hu id it ja ko mi nl no pl "
    "pt ro ru sv sw te th tr uk vi zh".split()
)
DEFAULT_LANGUAGE = "en"

MAX_QUESTION_CHARS = 500
MAX_OBJECTS = 8
MAX_OBJECT_CHARS = 60
# The worker's note to the user (InferenceResult.note) travels in the result's context.
NOTE_FIELD = "note"


class Task(enum.StrEnum):
    CAPTION = "caption"
    DESCRIBE = "describe"
    ANSWER = "answer"
    OCR = "ocr"
    DETECT = "detect"
    SEGMENT = "segment"

    @property
    def draws(self) -> bool:
        """Whether the answer is drawn on the picture (the worker sends a display copy)."""
        return self in (Task.DETECT, Task.SEGMENT)

    @classmethod
    def parse(cls, value: str) -> Task:
        try:
            return cls(value.strip().lower())
        except ValueError:
            names = ", ".join(t.value for t in cls)
            raise UnknownTask(f"Unknown task {value!r}; choose one of: {names}.") from None


# A caption is one short sentence; a description is a paragraph; OCR can be long; each
# detected object costs 4 location tokens plus a few label tokens, a segmented one 16
# mask codes more.
DEFAULT_MAX_NEW_TOKENS: dict[Task, int] = {
    Task.CAPTION: 32,
    Task.DESCRIBE: 200,
    Task.ANSWER: 48,
    Task.OCR: 256,
    Task.DETECT: 128,
    Task.SEGMENT: 256,
}
MAX_NEW_TOKENS_LIMIT = 512


def normalize_language(lang: str | None) -> str:
    """Return a supported language code, or raise UnsupportedLanguage."""
    if lang is None or not lang.strip():
        return DEFAULT_LANGUAGE
    code = lang.strip().lower().replace("_", "-")
    if code in LANGUAGES:
        return code
    base = code.split("-", 1)[0]  # Discord locales look like "pt-BR", "zh-CN", "es-ES"
    if base in LANGUAGES:
        return base
    if base == "nb":  # Norwegian Bokmål, Discord's "no" locale variant
        return "no"
    raise UnsupportedLanguage(
        f"Language {lang!r} is not supported; use one of: {', '.join(sorted(LANGUAGES))}."
    )


def split_objects(objects: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Split "a ; b, c" into clean object names for a detect prompt."""
    parts = objects if isinstance(objects, list | tuple) else objects.replace(",", ";").split(";")
    names: list[str] = []
    for raw in parts:
        # Newlines or `;` inside a name would break the prompt's structure.
        name = " ".join(raw.replace(";", " ").split()).lower()
        if name and name not in names:
            names.append(name)
    if not names:
        raise InvalidParameter("Tell me which objects to look for, e.g. `cat ; dog`.")
    if len(names) > MAX_OBJECTS:
        raise InvalidParameter(f"Please ask for at most {MAX_OBJECTS} kinds of object at once.")
    for name in names:
        if len(name) > MAX_OBJECT_CHARS:
            raise InvalidParameter(f"Object names must be at most {MAX_OBJECT_CHARS} characters.")
    return tuple(names)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A validated task with its parameters; builds the exact prompt prefix."""

    task: Task
    language: str = DEFAULT_LANGUAGE
    question: str | None = None
    objects: tuple[str, ...] = ()
    max_new_tokens: int | None = None

    @classmethod
    def build(
        cls,
        task: Task | str,
        *,
        language: str | None = None,
        question: str | None = None,
        objects: str | list[str] | tuple[str, ...] | None = None,
        max_new_tokens: int | None = None,
    ) -> TaskSpec:
        """Validate user-supplied parameters into a TaskSpec."""
        t = task if isinstance(task, Task) else Task.parse(task)
        lang = normalize_language(language)
        q: str | None = None
        objs: tuple[str, ...] = ()
        if t is Task.ANSWER:
            q = " ".join((question or "").split())
            if not q:
                raise InvalidParameter("Please include a question to answer.")
            if len(q) > MAX_QUESTION_CHARS:
                raise InvalidParameter(
                    f"Questions must be at most {MAX_QUESTION_CHARS} characters."
                )
        if t in (Task.DETECT, Task.SEGMENT):
            objs = split_objects(objects or "")
        if max_new_tokens is not None and not 1 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise InvalidParameter(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT}.")
        return cls(task=t, language=lang, question=q, objects=objs, max_new_tokens=max_new_tokens)

    @property
    def token_budget(self) -> int:
        return self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[self.task]

    def prompt(self) -> str:
        """The mix checkpoints' prompt (the processor adds `<image>`, `<bos>` and `\\n`)."""
        match self.task:
            case Task.CAPTION:
                return f"caption {self.language}"
            case Task.DESCRIBE:
                return f"describe {self.language}"
            case Task.ANSWER:
                return f"answer {self.language} {self.question}"
            case Task.OCR:
                return "ocr"
            case Task.DETECT:
                return "detect " + " ; ".join(self.objects)
            case Task.SEGMENT:
                return "segment " + " ; ".join(self.objects)


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """What one request produced: text, pixel boxes for detect (with masks for segment),
    the picture to draw them on (for tasks that draw), and a note for the user from the
    worker (such as why a segment answer has no masks)."""

    task: Task
    text: str
    detections: tuple[Detection, ...] = field(default_factory=tuple)
    error: str | None = None  # an errors.PalicordError code when this request failed
    error_message: str | None = None
    display: DisplayPicture | None = field(default=None, repr=False)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"task": self.task.value, "text": self.text}
        if self.task is Task.DETECT:
            out["detections"] = [d.to_dict() for d in self.detections]
        if self.task is Task.SEGMENT:
            out["segments"] = [d.to_dict() for d in self.detections]
        if self.note:
            out["note"] = self.note
        if self.error is not None:
            out["error"] = self.error
            out["error_message"] = self.error_message
        return out


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One image and one task; the engine decodes the bytes itself so that a bad image
    fails only its own request, never its batch neighbours. `prepared` holds what the
    engine's `prepare` made of the bytes ahead of time (its own type; None: not yet), and
    `digest` the picture's id (`inference.queue.memory.picture_digest`) where `prepare`
    computed it, so that the worker does not hash the bytes a second time."""

    spec: TaskSpec
    image: bytes
    prepared: object = field(default=None, compare=False, repr=False)
    digest: str | None = field(default=None, compare=False, repr=False)
