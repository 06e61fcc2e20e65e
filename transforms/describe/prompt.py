"""Versioned prompt templates, rendered with every untrusted value fenced as quoted data."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

from transforms.stage import Record

PROMPT_DIR = Path(__file__).parent / "prompts"
USER_MARKER = "==== USER ===="
PREFIX_MARKER = "==== ANSWER PREFIX ===="


@dataclass(frozen=True)
class RenderedPrompt:
    system: str
    user: str
    answer_prefix: str  # the start of the answer; empty for chat models that need none

    @property
    def sha(self) -> str:
        return hashlib.sha256(
            f"{self.system}\n{self.user}\n{self.answer_prefix}".encode()
        ).hexdigest()[:16]


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    source: str

    @property
    def sha(self) -> str:
        """sha256 of the template file: the prompt's lineage hash."""
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    def render(self, facts: dict[str, str]) -> RenderedPrompt:
        """Render with every ``facts`` value fenced by ``quote``."""
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
        text = env.from_string(self.source).render(**{k: quote(v) for k, v in facts.items()})
        system, _, rest = text.partition(USER_MARKER)
        user, _, prefix = rest.partition(PREFIX_MARKER)
        return RenderedPrompt(system.strip(), user.strip(), prefix.strip())


@lru_cache(maxsize=16)
def load_prompt(version: str) -> PromptTemplate:
    path = PROMPT_DIR / f"describe_{version}.jinja"
    if not path.is_file():
        known = sorted(
            p.stem.removeprefix("describe_") for p in PROMPT_DIR.glob("describe_*.jinja")
        )
        raise ValueError(f"describe.prompt_version '{version}' has no template; known: {known}")
    return PromptTemplate(version, path.read_text())


def quote(value: object) -> str:
    """JSON-quote a value and neutralise fence tags so data cannot close the <data> block."""
    text = json.dumps("" if value is None else str(value), ensure_ascii=False)
    return text.replace("<", "‹").replace(">", "›")


def _describe_visuals(stats: dict) -> str:
    if not stats:
        return "none"
    brightness = stats.get("brightness", 0.5)
    light = "dark" if brightness < 0.3 else "bright" if brightness > 0.6 else "normally lit"
    motion = stats.get("motion", 0.0)
    pace = "static" if motion < 0.02 else "fast-moving" if motion > 0.1 else "gently moving"
    colourful = "colourful" if stats.get("colourfulness", 0) > 0.2 else "muted colours"
    colours = ", ".join(stats.get("dominant_colours") or []) or "mixed"
    return f"{light}, {pace}, {colourful}; dominant colours: {colours}"


def _describe_audio(record: Record) -> str:
    if not record.get("has_audio"):
        return "no audio track"
    if record.get("transcript"):
        return "contains speech"
    return (
        "sound without recognisable speech (music or ambient)"
        if record.get("audio_rms", 0) > 0.01
        else "near silence"
    )


def item_facts(record: Record, max_transcript_chars: int) -> dict[str, str]:
    """The facts the describer may use, as plain strings (fenced later by ``quote``)."""
    transcript = (record.get("transcript") or "")[:max_transcript_chars] or "none"
    width, height = record.get("width"), record.get("height")
    orientation = "vertical" if (height or 0) > (width or 0) else "horizontal"
    picture = (
        f"{width}x{height} {orientation}, {record.get('fps') or 0:.0f} fps"
        if width
        else "none (audio only)"
    )
    return {
        "title": record.get("title") or "unknown",
        "tags": ", ".join(record.get("tags") or []) or "none",
        "duration": f"{record.get('duration_s') or 0:.1f} seconds",
        "picture": picture,
        "visuals": _describe_visuals(record.get("frame_stats") or {}),
        "audio": _describe_audio(record),
        "transcript": transcript,
        "on_screen_text": record.get("ocr_text") or "none",
    }
