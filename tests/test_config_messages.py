"""Issue 43 item 11: config refusals say what is wrong, exit 2, and never echo a value in
full. A path or model name no file system takes is refused by the config, not by the stage
that opens it; a number YAML 1.1 reads as text gets the spelling it needs; a directory given
as --config is one; a large plain document is named for the limit it passed (a bomb only
when aliases expand it); a key with look-alike letters shows their code points."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, load_config
from jobs.cli import main
from tests.cli_helpers import run_argv
from tests.test_config import BOMB

MAX_STDERR = 2000  # characters of a refusal, whatever the size of the value

PATH_KEYS = (
    "describe.model",
    "encode.model",
    "asr.model",
    "describe.gguf_file",
    "run.cache_dir",
    "run.staging_uri",
)
# value -> why it is refused (every path-like key above)
BAD_PATHS = {
    "one_long_name": ("m" * 300, "a name of 300 bytes"),
    "long_name_in_a_path": ("models/" + "m" * 256 + "/x", "a name of 256 bytes"),
    "multibyte_name": ("é" * 130, "a name of 260 bytes"),
    "whole_path_too_long": ("/".join(["d" * 200] * 30), "a path or model name is at most"),
    "huge": ("m" * 200_000, "a path or model name is at most"),
}


@pytest.mark.parametrize("key", PATH_KEYS)
@pytest.mark.parametrize("case", BAD_PATHS, ids=[f"item11-{k}" for k in BAD_PATHS])
def test_a_path_no_file_system_takes_is_refused_by_the_config(case, key):
    value, why = BAD_PATHS[case]
    with pytest.raises(ConfigError) as raised:
        load_config(None, [f"{key}={value}"])
    message = str(raised.value)
    assert why in message and f"'{key}'" in message
    assert len(message) < MAX_STDERR  # the value is cut, with its length


def test_allowed_roots_are_paths_too():
    with pytest.raises(ConfigError, match=r"media.allowed_roots.*a name of 300 bytes"):
        load_config(None, [f"media.allowed_roots=[{'r' * 300}]"])


def text_run(tmp: Path, *settings: str, extra: tuple[str, ...] = ()) -> list[str]:
    manifest = tmp / "items.jsonl"
    manifest.write_text('{"item_id": "a", "title": "t", "text": "x"}\n')
    return run_argv(manifest, tmp / "lake", *settings, extra=("--no-report", *extra))


def write(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


# case -> (argv maker, words stderr must hold, words it must not)
CLI_CASES = {
    "long_model_set": (
        lambda tmp: text_run(tmp, f"describe.model={'m' * 300}"),
        "a name of 300 bytes",
        "File name too long",
    ),
    "long_model_in_file": (
        lambda tmp: text_run(
            tmp, extra=("--config", write(tmp, "c.yaml", f"describe:\n  model: {'m' * 300}\n"))
        ),
        "a name of 300 bytes",
        "File name too long",
    ),
    "fifty_mb_value_in_file": (
        lambda tmp: text_run(
            tmp, extra=("--config", write(tmp, "c.yaml", f"describe:\n  model: {'m' * 50_000_000}"))
        ),
        "over the 1,048,576 a config file may have",
        "mmmmmmmmmm" * 30,
    ),
    "large_value_set": (
        lambda tmp: text_run(tmp, f"describe.prompt_version={'p' * 100_000}"),
        "characters in all",
        "p" * 300,
    ),
    "prompt_version_as_a_path": (
        lambda tmp: text_run(tmp, "describe.prompt_version=../../../etc/x"),
        "names a template",
        "has no template",
    ),
    "directory_as_config": (
        lambda tmp: text_run(tmp, extra=("--config", str(tmp))),
        "is a directory",
        "not found",
    ),
    "plain_large_list": (
        lambda tmp: text_run(
            tmp,
            extra=(
                "--config",
                write(tmp, "c.yaml", "media:\n  allowed_roots: [" + "a," * 20_000 + "a]\n"),
            ),
        ),
        "holds more than 10000 nodes",
        "bomb",
    ),
    "alias_bomb": (
        lambda tmp: text_run(tmp, extra=("--config", write(tmp, "c.yaml", BOMB))),
        "(a YAML bomb?)",
        "holds more than",
    ),
}


@pytest.mark.parametrize("case", CLI_CASES, ids=[f"item11-{k}" for k in CLI_CASES])
def test_config_refusals_exit_2_with_a_bounded_message(case, tmp_path, capsys):
    make, said, unsaid = CLI_CASES[case]
    assert main(make(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("enrich: error: ") and "Traceback" not in err
    assert said in err and unsaid not in err, err[:MAX_STDERR]
    assert len(err) < MAX_STDERR
    assert not (tmp_path / "lake").exists()


# setting -> the hint (YAML 1.1 reads 1e12 as a string; a whole-number key takes no exponent)
NUMBERS = {
    "media.max_file_mb=1e12": "write 1.0e+12",
    "media.max_duration_s=2.5E3": "write 2.5e+3",
    "describe.temperature=1e-3": "write 1.0e-3",
    "run.gpus_per_task=+5e-1": "write +5.0e-1",
    "run.stage_timeout_s={describe: 3e2}": "write 3.0e+2",
    "semantic_ids.seed=1e3": "a whole number: write 1000",
    "media.num_frames=1.6e+1": "a whole number: write 16",
}


@pytest.mark.parametrize("setting", NUMBERS, ids=[f"item11-{k.split('=')[0]}" for k in NUMBERS])
def test_an_exponent_yaml_reads_as_text_gets_a_hint(setting):
    with pytest.raises(ConfigError) as raised:
        load_config(None, [setting])
    assert NUMBERS[setting] in str(raised.value)


def test_a_number_that_is_no_float_at_all_gets_no_hint():
    with pytest.raises(ConfigError) as raised:
        load_config(None, ["media.max_file_mb=1e999"])  # infinite: refused, nothing to suggest
    assert "write" not in str(raised.value)


# a key spelled with look-alike letters -> how it must show
LOOKALIKES = {
    "cyrillic_e": ("d\u0435scribe.model=x", r"'d\u0435scribe'"),
    "greek_omicron": ("describe.m\u03bfdel=x", r"'describe.m\u03bfdel'"),
    "fullwidth_a": ("medi\uff41.fps=2", r"'medi\uff41'"),
    "zero_width_space": ("media.f\u200bps=2", r"'media.f\u200bps'"),
}


@pytest.mark.parametrize("case", LOOKALIKES, ids=[f"item11-{k}" for k in LOOKALIKES])
def test_look_alike_keys_are_shown_with_their_code_points(case, capsys):
    setting, shown = LOOKALIKES[case]
    with pytest.raises(ConfigError) as raised:
        load_config(None, [setting])
    message = str(raised.value)
    assert shown in message and "non-ASCII shown as \\u escapes" in message
    assert message.isascii()  # nothing in it can pass for the real key
    assert "did you mean" in message


def test_a_look_alike_duplicate_key_in_a_file_is_shown_escaped(tmp_path):
    path = write(tmp_path, "c.yaml", "media:\n  f\u0440s: 1\n  f\u0440s: 2\n")
    with pytest.raises(ConfigError, match=r"'f\\u0440s' .*appears twice"):
        load_config(path)
