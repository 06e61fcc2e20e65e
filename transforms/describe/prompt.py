"""Versioned prompt templates, rendered with every untrusted value fenced as quoted data.

A template has three sections: the system text, then a line ``==== USER ====`` and the user
text, then a line ``==== ANSWER PREFIX ====`` and the start of the answer. The source is split
into its sections *before* rendering, and each section is rendered on its own, so item data
can never move text from one section to another.

Item data is budgeted (``PromptBudget``): each data field (title, tags, text, transcript, OCR
text, visual tags) is cut to its character budget, and the rendered prompt to a token budget
(approximate: ``approx_tokens``), by cutting the longest data fields further. Every cut ends
in ``… [truncated]`` inside the quoted value, and the prompt names the fields it cut, so a
huge title costs no more than a short one and the row says what the describer did not see.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import jinja2

from core.errors import EnrichError, UsageError
from transforms.audio import describe_sound
from transforms.manifest import TEXT_ONLY
from transforms.stage import Record

PROMPT_DIR = Path(__file__).parent / "prompts"
USER_MARKER = "==== USER ===="
PREFIX_MARKER = "==== ANSWER PREFIX ===="
# A section marker counts only alone on its line (a comment may mention one mid-line).
MARKER_LINE = re.compile(r"^[ \t]*(==== [A-Z][A-Z ]* ====)[ \t\r]*$", re.MULTILINE)

# Chat-control tokens that survive the ‹ › mapping of ``<``/``>`` in ``quote`` (angle-bracket
# tokens such as <|im_start|>, <|eot_id|>, <start_of_turn>, <end_of_utterance>, <image> and
# <<SYS>> cannot). Mistral, Pixtral, Magistral, Codestral and Llama-2 use these.
KNOWN_CONTROL_TOKENS = frozenset(
    {
        "[INST]",
        "[/INST]",
        "[SYSTEM_PROMPT]",
        "[/SYSTEM_PROMPT]",
        "[TOOL_CALLS]",
        "[AVAILABLE_TOOLS]",
        "[/AVAILABLE_TOOLS]",
        "[TOOL_RESULTS]",
        "[/TOOL_RESULTS]",
        "[TOOL_CONTENT]",
        "[ARGS]",
        "[CALL_ID]",
        "[THINK]",
        "[/THINK]",
        "[IMG]",
        "[IMG_BREAK]",
        "[IMG_END]",
        "[AUDIO]",
        "[BEGIN_AUDIO]",
        "[TRANSCRIBE]",
        "[PREFIX]",
        "[SUFFIX]",
        "[MIDDLE]",
    }
)
# Visible, stable lookalikes for the characters that make up control tokens.
LOOKALIKES = str.maketrans({"[": "⟦", "]": "⟧", "|": "¦", "<": "‹", ">": "›"})


TRUNCATED = "… [truncated]"
CHARS_PER_TOKEN = 4  # ASCII text; other characters count one token each (see approx_tokens)
MIN_FIELD_CHARS = 40  # the token budget never cuts a data field shorter than this
# The data fields with a character budget: record field (as rows name it) → prompt fact.
BUDGETED_FIELDS = {
    "title": "title",
    "tags": "tags",
    "text": "text",
    "transcript": "transcript",
    "ocr_text": "on_screen_text",
    "visual_tags": "visual_tags",
}


@dataclass(frozen=True)
class PromptBudget:
    """How much item data one prompt holds: characters per data field (keyed like
    ``BUDGETED_FIELDS``) and approximate tokens for the whole rendered prompt."""

    title: int = 300
    tags: int = 300
    text: int = 1200
    transcript: int = 1200
    ocr_text: int = 600
    visual_tags: int = 600
    prompt_tokens: int = 2048

    @classmethod
    def of(cls, config: object) -> PromptBudget:
        """The budget a ``DescribeConfig`` sets (``max_*_chars``, ``max_prompt_tokens``)."""
        return cls(
            title=config.max_title_chars,
            tags=config.max_tags_chars,
            text=config.max_text_chars,
            transcript=config.max_transcript_chars,
            ocr_text=config.max_ocr_chars,
            visual_tags=config.max_visual_tags_chars,
            prompt_tokens=config.max_prompt_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def approx_tokens(text: str) -> int:
    """About one token per 4 ASCII characters and one per other character (CJK runs near one
    token a character): cheap, tokenizer-free, and on the high side for most text."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return -(-ascii_chars // CHARS_PER_TOKEN) + len(text) - ascii_chars


def clipped(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with the cut marked; unchanged when it fits."""
    if len(text) <= limit:
        return text
    kept = text[:limit].rstrip()
    return f"{kept} {TRUNCATED}" if kept else TRUNCATED


@dataclass(frozen=True)
class RenderedPrompt:
    system: str
    user: str
    answer_prefix: str  # the start of the answer; empty for chat models that need none
    truncated: tuple[str, ...] = ()  # the data fields cut to fit the budget (BUDGETED_FIELDS)

    @property
    def sha(self) -> str:
        return hashlib.sha256(
            f"{self.system}\n{self.user}\n{self.answer_prefix}".encode()
        ).hexdigest()[:16]

    @property
    def approx_tokens(self) -> int:
        return approx_tokens(f"{self.system}\n{self.user}\n{self.answer_prefix}")


@dataclass(frozen=True)
class PromptTemplate:
    """A template file, checked on load to hold exactly the system, user and prefix sections."""

    version: str
    source: str
    sections: tuple[str, str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sections = split_sections(self.source, self.version)
        for section in sections:
            _compiled(section)  # a syntax error fails the load, not the first item
        object.__setattr__(self, "sections", sections)

    @property
    def sha(self) -> str:
        """sha256 of the template file: the prompt's lineage hash."""
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    def render(self, facts: dict[str, str], control_tokens: Iterable[str] = ()) -> RenderedPrompt:
        """Render each section on its own, with every ``facts`` value fenced by ``quote``."""
        tokens = frozenset(control_tokens)
        quoted = {name: quote(value, tokens) for name, value in facts.items()}
        system, user, prefix = (_compiled(s).render(**quoted).strip() for s in self.sections)
        return RenderedPrompt(system, user, prefix)


def split_sections(source: str, version: str) -> tuple[str, str, str]:
    """The template source's system, user and answer-prefix sections, split on marker lines."""
    markers = list(MARKER_LINE.finditer(source))
    found = [m.group(1) for m in markers]
    if found != [USER_MARKER, PREFIX_MARKER]:
        raise ValueError(
            f"prompt template '{version}' must have the lines '{USER_MARKER}' and then "
            f"'{PREFIX_MARKER}', each once and alone on its line; found {found}"
        )
    user, prefix = markers
    return source[: user.start()], source[user.end() : prefix.start()], source[prefix.end() :]


@lru_cache(maxsize=64)
def _compiled(section: str) -> jinja2.Template:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    return env.from_string(section)


@lru_cache(maxsize=16)
def load_prompt(version: str) -> PromptTemplate:
    path = PROMPT_DIR / f"describe_{version}.jinja"
    if not path.is_file():
        known = sorted(
            p.stem.removeprefix("describe_") for p in PROMPT_DIR.glob("describe_*.jinja")
        )
        raise UsageError(f"describe.prompt_version '{version}' has no template; known: {known}")
    return PromptTemplate(version, path.read_text())


def quote(value: object, control_tokens: Iterable[str] = ()) -> str:
    """JSON-quote a value, defang chat-control tokens (``KNOWN_CONTROL_TOKENS`` plus
    ``control_tokens``) and map ``<``/``>`` to ‹ › so data cannot close the <data> fence."""
    text = json.dumps("" if value is None else str(value), ensure_ascii=False)
    pattern = _control_pattern(frozenset(control_tokens))
    text = pattern.sub(lambda match: defang(match.group()), text)
    return text.replace("<", "‹").replace(">", "›")


def defang(token: str) -> str:
    """A visible lookalike of a control token that no tokenizer reads as one."""
    safe = token.translate(LOOKALIKES)
    return safe if safe != token else f"{token[0]}\u00b7{token[1:]}"  # a word: break it with ·


@lru_cache(maxsize=16)
def _control_pattern(extra: frozenset[str]) -> re.Pattern:
    """One regex for all control tokens, longest first. Tokens with ``<``/``>`` need none
    (``quote`` maps those characters), nor do blanks or single characters (not defangable)."""
    tokens = {
        t for t in KNOWN_CONTROL_TOKENS | extra if len(t.strip()) > 1 and not {"<", ">"} & set(t)
    }
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


def describe_visuals(stats: dict) -> str:
    if not stats:
        return "none"
    brightness = stats.get("brightness", 0.5)
    light = "dark" if brightness < 0.3 else "bright" if brightness > 0.6 else "normally lit"
    motion = stats.get("motion", 0.0)
    pace = "static" if motion < 0.02 else "fast-moving" if motion > 0.1 else "gently moving"
    colourful = "colourful" if stats.get("colourfulness", 0) > 0.2 else "muted colours"
    colours = ", ".join(stats.get("dominant_colours") or []) or "mixed"
    return f"{light}, {pace}, {colourful}; dominant colours: {colours}"


# The record fields the prompt reads. Every stage chain must produce them (a test walks the
# configured chains); a record without one fails loudly instead of weakening the prompt.
PROMPT_FIELDS = frozenset(
    {
        "title",
        "tags",
        "text",
        "duration_s",
        "width",
        "height",
        "fps",
        "has_audio",
        "audio_rms",
        "transcript",
        "ocr_text",
        "frame_stats",
        "visual_tags",
    }
)


NO_MEDIA = "none (no media)"


class MissingField(EnrichError, KeyError):
    """A record lacks a field the prompt reads: a stage that declares it did not add it."""


def declared(record: Record, name: str) -> object:
    """``record[name]`` for a field in ``PROMPT_FIELDS`` (its value may be None); a
    ``MissingField`` naming the field when no stage added it."""
    try:
        return record[name]
    except KeyError:
        raise MissingField(
            f"record {record.get('item_id')!r} has no field {name!r}: the prompt reads it, so "
            "a stage before describe must add it (see Stage.adds)"
        ) from None


def is_text_only(record: Record) -> bool:
    """An item with no media at all (``media_kind`` "text"): only its metadata describes it."""
    return record.get("media_kind") == TEXT_ONLY


def describe_audio(record: Record) -> str:
    """What the clip sounds like: the audio stage's events when it ran, else whether there is
    speech (a transcript) or other sound."""
    if is_text_only(record):
        return NO_MEDIA
    if not declared(record, "has_audio"):
        return "no audio track"
    if sound := describe_sound(record):
        return sound
    if declared(record, "transcript"):
        return "contains speech"
    return (
        "sound without recognisable speech (music or ambient)"
        if (declared(record, "audio_rms") or 0) > 0.01
        else "near silence"
    )


def describe_tags(record: Record) -> str:
    """The visual tags as one line: label (mean score, share of frames); 'none' without."""
    tags = declared(record, "visual_tags") or []
    return (
        "; ".join(
            f"{t['label']} (score {t['score']:.2f}, in {t['share']:.0%} of frames)" for t in tags
        )
        or "none"
    )


def item_facts(
    record: Record, budget: PromptBudget | int = PromptBudget(), visual_context: bool = True
) -> dict[str, str]:
    """The facts the describer may use, as plain strings (fenced later by ``quote``), each data
    field cut to its character budget (an int is the transcript and text budget, the rest
    default). Reads ``PROMPT_FIELDS`` strictly: a missing field raises ``MissingField``."""
    if isinstance(budget, int):
        budget = PromptBudget(transcript=budget, text=budget)
    limits = {fact: getattr(budget, name) for name, fact in BUDGETED_FIELDS.items()}
    return _filled(_data_facts(record, visual_context), limits)


def _data_facts(record: Record, visual_context: bool) -> dict[str, str]:
    """Every fact as its full text ("" where the item has none)."""
    width, height = declared(record, "width"), declared(record, "height")
    orientation = "vertical" if (height or 0) > (width or 0) else "horizontal"
    picture = (
        f"{width}x{height} {orientation}, {declared(record, 'fps') or 0:.0f} fps"
        if width
        else "none (audio only)"
    )
    facts = {
        "title": declared(record, "title") or "",
        "tags": ", ".join(declared(record, "tags") or []),
        "text": declared(record, "text") or "",
        "duration": f"{declared(record, 'duration_s') or 0:.1f} seconds",
        "picture": picture,
        "visual_tags": describe_tags(record) if visual_context else "not used",
        "visuals": describe_visuals(declared(record, "frame_stats") or {}),
        "audio": describe_audio(record),
        "transcript": declared(record, "transcript") or "",
        "on_screen_text": declared(record, "ocr_text") or "",
    }
    if is_text_only(record):  # nothing was decoded: say so rather than "0.0 seconds"
        facts.update(duration=NO_MEDIA, picture=NO_MEDIA)
    return facts


EMPTY_FACTS = {"title": "unknown"}  # what an empty data field reads as ("none" otherwise)


def _filled(facts: dict[str, str], limits: dict[str, int]) -> dict[str, str]:
    """``facts`` with each budgeted one cut to its limit, and empty ones named."""
    cut = {
        name: clipped(value, limits[name]) if name in limits else value
        for name, value in facts.items()
    }
    return {name: value or EMPTY_FACTS.get(name, "none") for name, value in cut.items()}


def fitted_prompt(
    template: PromptTemplate,
    record: Record,
    budget: PromptBudget,
    *,
    visual_context: bool = True,
    control_tokens: Iterable[str] = (),
) -> RenderedPrompt:
    """The prompt for ``record`` within ``budget``: fields cut to their character budgets,
    then the longest fields cut further until the prompt's ``approx_tokens`` fit (never below
    ``MIN_FIELD_CHARS``). The result names every field it cut."""
    facts = _data_facts(record, visual_context)
    limits = {fact: getattr(budget, name) for name, fact in BUDGETED_FIELDS.items()}
    while True:
        prompt = template.render(_filled(facts, limits), control_tokens)
        excess = prompt.approx_tokens - budget.prompt_tokens
        kept = {name: min(len(facts[name]), limit) for name, limit in limits.items()}
        longest = max(kept, key=kept.get)
        if excess <= 0 or kept[longest] <= MIN_FIELD_CHARS:
            break  # fits, or only the template itself is left over (check_budget)
        limits[longest] = max(MIN_FIELD_CHARS, kept[longest] - CHARS_PER_TOKEN * excess)
    truncated = tuple(
        name for name, fact in BUDGETED_FIELDS.items() if len(facts[fact]) > limits[fact]
    )
    return RenderedPrompt(prompt.system, prompt.user, prompt.answer_prefix, truncated)


def check_budget(template: PromptTemplate, budget: PromptBudget) -> None:
    """Fail fast when the template with empty data is over ``describe.max_prompt_tokens``."""
    empty = {
        name: "none"
        for name in (*BUDGETED_FIELDS.values(), "duration", "picture", "visuals", "audio")
    }
    needs = template.render(empty).approx_tokens
    if needs > budget.prompt_tokens:
        raise UsageError(
            f"describe.max_prompt_tokens={budget.prompt_tokens} is below the {needs} tokens "
            f"(approximate) that prompt '{template.version}' needs with no item data"
        )
