"""Stage fingerprints derived from the config: every setting of a stage's section moves its
stage's fingerprint unless the setting is tagged as not changing what is written
(core/config.py UNFINGERPRINTED), and the lakes of the previous release keep theirs."""

from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError

from core.config import UNFINGERPRINTED, Config, field_tags, load_config
from core.errors import UsageError
from transforms.pipeline import build_stages, stage_fingerprints

BACKENDS = ("offline", "transformers", "openai")


def candidate_values(field) -> list:
    """Values of ``field``'s type other than its default (the config validates them)."""
    default = field.get_default(call_default_factory=True)
    if typing.get_origin(field.annotation) is typing.Literal:
        return [choice for choice in typing.get_args(field.annotation) if choice != default]
    if isinstance(default, bool):
        return [not default]
    if isinstance(default, int):
        return [default + 1, default - 1]
    if isinstance(default, float):
        return [default / 2, default * 1.5, default + 0.1, 0.25]
    if isinstance(default, list):
        return [[*default, "/srv/other"]]
    return ["v2", "OTHER_KEY", "Org/Other-Model", f"{default}-other"]  # a prompt, a name, ids


def fingerprints_with(section: str, base: dict, key: str, field) -> tuple[str, list[str]]:
    """The fingerprint of ``base``, and of each valid other value of ``key`` on top of it."""
    others = []
    for value in candidate_values(field):
        try:
            others.append(fingerprint_of(section, {**base, key: value}))
        except (ValidationError, UsageError):
            continue  # not a valid value of this setting
    assert others, f"no valid other value for {section}.{key}"
    return fingerprint_of(section, base), others


def section_fields(section: str, backend: str):
    """(key, field) for each setting of ``section``; for describe, those that apply with
    ``backend`` (a setting used only ``when`` another backend runs is tested there)."""
    for key, field in type(getattr(Config(), section)).model_fields.items():
        wanted = field_tags(field).get("when", {}).get("backend", [backend])
        fixed = typing.get_origin(field.annotation) is typing.Literal and (
            len(typing.get_args(field.annotation)) == 1  # one allowed value: cannot change
        )
        if not fixed and (section != "describe" or (key != "backend" and backend in wanted)):
            yield key, field


def fingerprint_of(section: str, overrides: dict) -> str:
    config = Config.model_validate({section: overrides})
    return stage_fingerprints(build_stages(config))[section]


STAGE_SECTIONS = [stage.name for stage in build_stages(Config())]
CASES = [
    (section, backend, key)
    for section in STAGE_SECTIONS
    for backend in (BACKENDS if section == "describe" else ("offline",))
    for key, _ in section_fields(section, backend)
]


@pytest.mark.parametrize(("section", "backend", "key"), CASES)
def test_every_setting_is_fingerprinted_or_tagged(section, backend, key):
    field = type(getattr(Config(), section)).model_fields[key]
    tags = field_tags(field)
    base = {"backend": backend, "model": "Org/Model-7B"} if section == "describe" else {}
    base.update({k: v for k, v in tags.get("when", {}).items() if not isinstance(v, list)})
    plain, others = fingerprints_with(section, base, key, field)
    if tags.get("fingerprint"):
        assert tags["fingerprint"] in UNFINGERPRINTED, f"{section}.{key}: unknown tag"
        assert set(others) == {plain}, f"{section}.{key} is tagged but moves the fingerprint"
    else:
        assert set(others) - {plain}, (
            f"{section}.{key} changes nothing in the {section} fingerprint: fingerprint it "
            "(a setting or the stage's fingerprint_fields) or tag it operational/admission"
        )


def test_cases_cover_every_stage_section_and_backend():
    assert (
        {section for section, _, _ in CASES}
        == set(STAGE_SECTIONS)
        >= {"media", "asr", "ocr", "visual", "describe", "encode"}
    )
    assert {backend for section, backend, _ in CASES if section == "describe"} == set(BACKENDS)
    assert len(CASES) > 60


def test_on_audio_error_moves_the_media_fingerprint():
    """It decides whether an unreadable track is an error row or a description without sound:
    the hand-written list left it out, so switching it redid nothing."""
    plain = fingerprint_of("media", {})
    assert fingerprint_of("media", {"on_audio_error": "skip_audio"}) != plain


# Fingerprints of the previous release (fd45aad), default config unless named.
PREVIOUS = {
    "ocr": "64733574191b1a32",
    "visual": "bdbf158859074ecc",
    "encode": "fbc465eed667881d",
}
PREVIOUS_VLM = {  # prompt v3, frames, transcript: what those lakes were written with
    "configs/production.vllm.yaml": "4d214c0fe8f9f63f",
    "configs/production.transformers.yaml": "ab20056575157551",
}
PLAIN_VLM = [
    "describe.prompt_version=v3",
    "describe.video_input=frames",
    "describe.audio_input=transcript",
]


def test_unchanged_stages_keep_the_previous_releases_fingerprints():
    current = stage_fingerprints(build_stages(Config()))
    assert {name: current[name] for name in PREVIOUS} == PREVIOUS
    for path, describe in PREVIOUS_VLM.items():
        config = load_config(path, overrides=PLAIN_VLM)
        assert stage_fingerprints(build_stages(config))["describe"] == describe, path
