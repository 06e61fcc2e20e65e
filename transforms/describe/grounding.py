"""Grounding: how much of a description the evidence supports, and sentences built from it.

The evidence of a clip is what the pipeline observed or was given: the visual tags (with their
WordNet synonyms from the ImageNet class list, and a few hypernyms such as "dog" or "bicycle"),
the transcript, the on-screen text, the title, tags and text, and the frame statistics. An
item without media (text-only) has only its title, tags and text. A content
word of a description is supported when it, or its simple stem, appears in that evidence. The
grounding of a text is the share of its content words that are supported.
"""

from __future__ import annotations

import re
from functools import lru_cache

from transforms.describe.prompt import (
    PromptBudget,
    clipped,
    describe_audio,
    describe_visuals,
    is_text_only,
)
from transforms.stage import Record

WORD = re.compile(r"[a-z][a-z'-]*")
# A sentence piece: up to its end mark, with a closing quote or bracket (and its own end mark)
# kept; or a trailing piece with no end mark. ``sentences`` glues pieces inside a quote back.
SENTENCE_PIECE = re.compile(r"[^.!?]+[.!?]+(?:[\"'”’)\]]+[.!?]*)?|[^.!?]+$")
COMPLETE = re.compile(r"[.!?][\"'”’)\]]*[.!?]*$")
MAX_TAGS_NAMED = 3
MAX_GENERATED_SENTENCES = 2
MIN_TAG_SHARE = 0.25
# Broader words for ImageNet classes (the class list has synonyms but not the hierarchy):
# index ranges of the animal groups, and label lists for the rest.
HYPERNYM_RANGES = {
    "animal": [(0, 397)],
    "fish": [(0, 6), (389, 397)],
    "bird": [(7, 24), (80, 100), (127, 146)],
    "reptile": [(33, 68)],
    "dog": [(151, 268)],
    "cat": [(281, 285)],
    "bear": [(294, 297)],
    "insect": [(300, 326)],
    "monkey": [(369, 384)],
    "food": [(923, 969)],
    "fruit": [(948, 957)],
    "plant": [(984, 998)],
}
CYCLES = ["mountain bike", "bicycle-built-for-two", "tricycle", "unicycle"]
CARS = [
    "cab",
    "convertible",
    "jeep",
    "limousine",
    "minivan",
    "Model T",
    "racer",
    "sports car",
    "beach wagon",
    "car wheel",
    "car mirror",
    "grille",
    "ambulance",
    "police van",
]
HYPERNYM_LABELS = {
    "bicycle": CYCLES,
    "bike": [*CYCLES, "moped", "motor scooter"],
    "cycle": CYCLES,
    "car": CARS,
    "vehicle": [
        *CARS,
        *CYCLES,
        "moped",
        "motor scooter",
        "streetcar",
        "trolleybus",
        "school bus",
        "minibus",
        "moving van",
        "pickup",
        "trailer truck",
        "tow truck",
        "garbage truck",
        "fire engine",
        "jinrikisha",
        "forklift",
        "tractor",
    ],
    "tie": ["bow tie", "Windsor tie"],
    "clothing": [
        "bow tie",
        "Windsor tie",
        "suit",
        "jersey",
        "sweatshirt",
        "cardigan",
        "trench coat",
        "lab coat",
        "academic gown",
        "abaya",
        "kimono",
        "jean",
    ],
    "street": ["parking meter", "street sign", "traffic light", "streetcar", "cab"],
    "screen": ["web site", "television", "monitor", "screen", "scoreboard"],
}
# Words that carry no claim about the clip: function words and the template's own scaffolding.
_STOPWORD_TEXT = """
    a an the and or but if of to in on at by for with from into onto over under about as is
    are was were be been being it its this that these those there here which who whom whose what
    when where while how why not no nor so than too very can could will would shall should may
    might must do does did done has have had having i you he she we they them his her their our
    your my me us him one two three also just only some any each every all both more most other
    such own same then once again further up down out off above below between through during
    before after video clip clips frame frames sampled shows show showing shown seen appear
    appears image images picture pictures labels label classifier imagenet including include
    includes features feature title titled tagged tags tag said says saying spoken speech
    transcript text screen on-screen reads read written words word heard sound sounds audio
    second seconds long length lasting lasts minute minutes content contains mostly mainly
    likely possibly perhaps style look looks scene scenes shot shots part parts first last
    across throughout overall set setting kind type something it's way thing things cut cuts
    item items none"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@lru_cache(maxsize=1)
def class_words() -> dict[str, frozenset[str]]:
    """For each ImageNet label: the words of its synonyms and of its hypernyms."""
    from transforms.visual import imagenet_classes

    classes = imagenet_classes()
    extra: dict[str, set[str]] = {}
    for word, ranges in HYPERNYM_RANGES.items():
        for low, high in ranges:
            for index in range(low, high + 1):
                extra.setdefault(classes[index].label, set()).add(word)
    for word, labels in HYPERNYM_LABELS.items():
        for label in labels:
            extra.setdefault(label, set()).add(word)
    return {
        c.label: frozenset(words(" ".join(c.names)) | extra.get(c.label, set())) for c in classes
    }


def words(text: str) -> set[str]:
    """Lower-case words of ``text``, hyphenated words also split into their parts."""
    found = set()
    for word in WORD.findall(text.lower()):
        word = word.strip("'-")
        found.add(word)
        found.update(p for p in re.split(r"[-']", word) if p)
    return found


def variants(word: str) -> set[str]:
    """``word`` and its crude English stems, enough to match plurals and verb forms."""
    found = {word}
    for suffix, replacements in (
        ("ies", ("y",)),
        ("es", ("", "e")),
        ("s", ("",)),
        ("ing", ("", "e")),
        ("ed", ("", "e")),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            found.update(word[: -len(suffix)] + r for r in replacements)
    return found


def content_words(text: str) -> list[str]:
    """The words of ``text`` that make a claim (no stop words, numbers or short words)."""
    return [
        w.strip("'-")
        for w in WORD.findall(text.lower())
        if len(w.strip("'-")) > 2 and w.strip("'-") not in STOPWORDS
    ]


def evidence_text(record: Record) -> str:
    """Everything the clip's evidence says, as one text."""
    tags = record.get("visual_tags") or []
    tag_words = [" ".join(class_words().get(t["label"], {t["label"]})) for t in tags]
    shots = [label for shot in record.get("visual_shots") or [] for label in shot["labels"]]
    shot_words = [" ".join(class_words().get(label, {label})) for label in shots]
    parts = [
        record.get("title") or "",
        " ".join(record.get("tags") or []),
        record.get("text") or "",
        record.get("transcript") or "",
        record.get("ocr_text") or "",
        describe_visuals(record.get("frame_stats") or {}),
        describe_audio(record),
        orientation(record),
        *tag_words,
        *shot_words,
    ]
    return " ".join(parts)


def orientation(record: Record) -> str:
    """ "vertical" or "horizontal"; empty without a picture (a text-only or audio item)."""
    if not record.get("width"):
        return ""
    return "vertical" if (record.get("height") or 0) > record["width"] else "horizontal"


def word_stems(text: str) -> frozenset[str]:
    """The words of ``text`` and their stems."""
    return frozenset(v for w in words(text) for v in variants(w))


def evidence_vocabulary(record: Record) -> frozenset[str]:
    """The evidence's words and their stems."""
    return word_stems(evidence_text(record))


def unstated_evidence(record: Record, stated: str) -> frozenset[str]:
    """The evidence's content words that ``stated`` (the text built from the evidence) does
    not already say: the only claims a generated sentence can add and still be grounded."""
    said = word_stems(stated)
    return frozenset(w for w in content_words(evidence_text(record)) if not supported(w, said))


def supported(word: str, vocabulary: frozenset[str]) -> bool:
    return not variants(word).isdisjoint(vocabulary)


def grounding(text: str, vocabulary: frozenset[str]) -> float:
    """Share of ``text``'s content words that the evidence supports (1.0 with none)."""
    claims = content_words(text)
    if not claims:
        return 1.0
    return sum(supported(w, vocabulary) for w in claims) / len(claims)


def open_quote(text: str) -> bool:
    """Whether ``text`` leaves a double quote open (straight or curly)."""
    return text.count('"') % 2 == 1 or text.count("“") > text.count("”")


def sentences(text: str, *, complete: bool = False) -> list[str]:
    """The sentences of ``text``, a quoted passage whole inside its sentence (its end marks
    do not end the sentence), in the text's own characters. ``complete``: only sentences
    that end with an end mark and close their quotes (a cut-off tail is dropped)."""
    found: list[str] = []
    start = None
    for piece in SENTENCE_PIECE.finditer(text):
        start = piece.start() if start is None else start
        if not open_quote(text[start : piece.end()]):
            found.append(text[start : piece.end()].strip())
            start = None
    if start is not None:  # a quote that never closes: its tail is one unfinished sentence
        found.append(text[start:].strip())
    if complete:
        found = [s for s in found if COMPLETE.search(s) and not open_quote(s)]
    return [s for s in found if s]


def grounded_sentences(
    text: str,
    vocabulary: frozenset[str],
    minimum: float,
    *,
    adds: frozenset[str] | None = None,
    limit: int = MAX_GENERATED_SENTENCES,
) -> list[str]:
    """The whole sentences of ``text`` that make a claim the evidence supports (grounding of
    at least ``minimum``), the first ``limit``; with ``adds``, only those that say one of
    these words. A piece with no claim (a stray quote, "Yes.") or an unclosed quote is not a
    sentence worth keeping."""
    kept = [
        s
        for s in sentences(text, complete=True)
        if content_words(s)
        and grounding(s, vocabulary) >= minimum
        and (adds is None or any(supported(w, word_stems(s)) for w in adds))
    ]
    return kept[:limit]


def named_tags(record: Record) -> list[str]:
    """The visual tags worth naming: the best, then others seen in enough frames."""
    tags = record.get("visual_tags") or []
    named = [t["label"] for t in tags[:1]]
    named += [t["label"] for t in tags[1:] if t["share"] >= MIN_TAG_SHARE]
    return named[:MAX_TAGS_NAMED]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def single_quoted_marks(text: str) -> str:
    """``text`` with its double quotes made single, so it cannot leave a quote open."""
    return re.sub(r'["“”]', "'", text)


def quoted(text: str) -> str:
    """``text`` in double quotes that nothing inside it can close early or leave open."""
    return f'"{single_quoted_marks(text)}"'


def opening_sentence(record: Record) -> str:
    """The opening sentence: the title and the visual tags worth naming, from the evidence."""
    title = clipped((record.get("title") or "").strip().rstrip("."), PromptBudget.title)
    titled = f" titled {quoted(title)}" if title else ""
    if is_text_only(record):
        return f"This item{titled} has no media; it is described from its metadata."
    if tags := named_tags(record):
        return f"This video{titled} shows what an image classifier labels {_join(tags)}."
    if record.get("frames") or record.get("frames_sampled"):
        return f"This video{titled} has no visual tags."
    return f"This video{titled} has no frames to label."


def template_sentences(record: Record) -> list[str]:
    """One sentence stated straight from the evidence: picture, shots, length and audio (one
    sentence, so the describer's sentence cap never cuts the quotes that follow). An item
    without media gets its tags instead: it has no picture, length or audio to state."""
    if is_text_only(record):
        tags = [t.strip() for t in record.get("tags") or [] if t.strip()]
        return [f"Tags: {single_quoted_marks(', '.join(tags))}."] if tags else []
    parts = []
    if stats := record.get("frame_stats"):
        parts.append(f"the picture is {describe_visuals(stats)}")
    if shots := record.get("visual_shots") or []:
        parts.append(f"it cuts between {len(shots)} shots")
    if record.get("duration_s"):
        seconds = max(1, round(record["duration_s"]))
        parts.append(f"it lasts {seconds} {'second' if seconds == 1 else 'seconds'}")
    parts.append(f"audio: {describe_audio(record)}")
    text = "; ".join(parts)
    return [text[0].upper() + text[1:] + "."]
