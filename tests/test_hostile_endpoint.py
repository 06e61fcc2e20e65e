"""Issue 43, the describer endpoint's part (items 2, 3, 4, 5, 6, 8 and 12): what an
OpenAI-compatible endpoint sends back is data, never trusted. Each fault of the fake server
(tests/fake_openai_server.py ``HOSTILE``) is one row of a table naming the issue's item, run
against the openai describer; then one ``enrich run`` meets every fault at once, mixed with
good answers, over a lake an older release wrote."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import tracemalloc
import uuid
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from core.config import DescribeConfig
from core.errors import ERROR_CODES, UsageError
from jobs.cli import main
from schemas.store import DeltaStore
from schemas.tables import TABLES
from tests.cli_helpers import run_argv
from tests.fake_openai_server import HOSTILE, FakeOpenAI
from tests.test_describe_openai import clip
from transforms.describe import build_describer
from transforms.describe.completion import body_cap

KEY = f"sk-hostile-{uuid.uuid4().hex}"
USER, PASSWORD = "gw-user", f"pa:ss@{uuid.uuid4().hex[:10]}/é"  # needs percent-encoding
USERINFO = f"{quote(USER, safe='')}:{quote(PASSWORD, safe='')}"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
# Every form a server can echo a credential in: what the key and the userinfo must never
# be found as, in a row, a message, a file or the output.
SECRETS = (KEY, PASSWORD, f"{USER}:{PASSWORD}", USERINFO, BASIC, BASIC.rstrip("="))
TIMEOUT_S = 1.0
MAX_NEW_TOKENS = 64
CONTROL = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)] if chr(c) not in "\n\r\t"]
BIDI = [
    "\u061c",
    "\u200e",
    "\u200f",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
]


def enriched(check):
    return (None, check)


def failed(code: str, reason: str):
    return (code, reason)


def no_controls(row: dict) -> None:
    text = row["description"]
    assert not set(text) & set(CONTROL + BIDI), repr(text)
    assert "[2J" not in text and "ends here" in text  # escape sequences go whole


# issue item, fault, (error code, reason in its message) or (None, check of the enriched item)
FAULTS = [
    ("2", "echo_answer", enriched(lambda r: "***" in r["description"])),
    ("2", "echo_error", failed("describer_unavailable", "HTTP 500: upstream refused")),
    ("2", "echo_auth", failed("describe_failed", "HTTP 400: credential Bearer ***")),
    ("3", "usage_overflow", failed("describe_failed", "usage.prompt_tokens: Input should be less")),
    ("3", "usage_negative", failed("describe_failed", "completion_tokens: Input should be gre")),
    ("3", "usage_float", failed("describe_failed", "usage.prompt_tokens: Input should be a valid")),
    ("3", "model_object", failed("describe_failed", "model: Input should be a valid string")),
    ("3", "model_list", failed("describe_failed", "model: Input should be a valid string")),
    ("3", "content_number", failed("describe_failed", "message.content: Input should be a valid")),
    ("3", "no_choices", failed("describe_failed", "choices: List should have at least 1 item")),
    ("3", "finish_reason_object", failed("describe_failed", "finish_reason: Input should be")),
    ("4", "drip", failed("describe_timeout", "within describe.timeout_s=1 s")),
    ("4", "drip_headers", failed("describe_timeout", "within describe.timeout_s=1 s")),
    ("4", "silent", failed("describe_timeout", "within describe.timeout_s=1 s")),
    ("4", "endless", failed("describe_failed", f"went past {body_cap(MAX_NEW_TOKENS):,} bytes")),
    ("5", "long_answer", failed("describe_failed", "refused, not truncated")),
    ("5", "huge_answer", failed("describe_failed", "declares 20,000,")),
    ("6", "parts", enriched(lambda r: r["description"].endswith("It is told in two parts."))),
    ("6", "content_image_part", failed("describe_failed", "must hold only text parts")),
    ("8", "truncated_json", failed("describe_failed", "not JSON (Unterminated string")),
    ("8", "bad_utf8", failed("describe_failed", "is not UTF-8 (byte 45")),
    ("8", "not_json", failed("describe_failed", "is not JSON (Expecting value")),
    ("8", "deep_json", failed("describe_failed", "not JSON this reader takes (RecursionError)")),
    ("8", "usage_text", failed("describe_failed", "completion_tokens: Input should be a valid")),
    ("8", "gzip", failed("describe_failed", "gzip-encoded answer")),
    ("12", "length", enriched(lambda r: r["describe_finish_reason"] == "length")),
    ("12", "controls", enriched(no_controls)),
]


def test_the_table_covers_every_hostile_fault_of_the_fake():
    assert {fault for _, fault, _ in FAULTS} == set(HOSTILE) | {"echo_auth"}


def describer_for(url: str, *, key: bool = True, **overrides):
    settings = {
        "backend": "openai",
        "model": "served/vlm",
        "endpoint": url,
        "api_key_env": "HOSTILE_VLM_KEY" if key else None,
        "timeout_s": TIMEOUT_S,
        "max_retries": 0,
        "max_new_tokens": MAX_NEW_TOKENS,
        "gguf_file": None,
    }
    return build_describer(DescribeConfig(**{**settings, **overrides}))


@pytest.fixture(scope="module")
def hostile():
    """A fake endpoint that knows the credentials (as a gateway does) and the describer."""
    os.environ["HOSTILE_VLM_KEY"] = KEY
    with FakeOpenAI(api_key=KEY) as server:
        server.echo = list(SECRETS)
        server.fault_limit_s = 20
        yield server, describer_for(server.url.replace("://", f"://{USERINFO}@"))
    os.environ.pop("HOSTILE_VLM_KEY")


def item(fault: str, n: int = 0) -> dict:
    return {**clip(n), "item_id": f"{fault}-{n}", "title": f"Pasta {n} fault:{fault}"}


@pytest.mark.parametrize(
    "issue_item, fault, outcome", FAULTS, ids=[f"item{n}-{fault}" for n, fault, _ in FAULTS]
)
def test_each_hostile_answer_is_an_enriched_item_or_its_error_row(
    hostile, issue_item, fault, outcome
):
    server, stage = hostile
    started = time.monotonic()
    [record] = stage.process_batch([item(fault)])
    elapsed = time.monotonic() - started
    code, expected = outcome
    error = record.get("error")
    if code is None:
        assert error is None, f"item {issue_item}: {error}"
        expected(record)
    else:
        assert error and error["code"] == code, f"item {issue_item}: {error}"
        assert error["code"] in ERROR_CODES and expected in error["message"], error["message"]
    assert elapsed < TIMEOUT_S + 1.0, f"item {issue_item}: {fault} took {elapsed:.1f} s"
    assert not [secret for secret in SECRETS if secret in repr(record)], f"item {issue_item}"


def test_item_2_the_userinfo_goes_as_basic_and_every_echo_of_it_is_masked():
    """No key: the endpoint's user:password is sent as Basic, and a server that repeats it
    (the header, the pair, the password, percent-encoded) has it masked in rows and errors."""
    with FakeOpenAI() as server:
        server.echo = [USERINFO, f"{USER}:{PASSWORD}", PASSWORD, quote(PASSWORD, safe="")]
        stage = describer_for(server.url.replace("://", f"://{USERINFO}@"), key=False)
        records = stage.process_batch([item("echo_answer", 0), item("echo_error", 1)])
    assert {r["auth"] for r in server.requests} == {f"Basic {BASIC}"}
    assert "authorization=Basic ***" in records[0]["description"]
    assert "authorization=Basic ***" in records[1]["error"]["message"]
    assert not [secret for secret in SECRETS if secret in repr(records)]


MALFORMED = [fault for issue_item, fault, _ in FAULTS if issue_item == "8"]


def test_item_8_malformed_output_is_sent_for_once_not_retried():
    """A malformed answer is the server's, not a passing fault: no HTTP retry, no item retry."""
    with FakeOpenAI() as server:
        stage = describer_for(server.url, key=False, max_retries=3, backoff_s=0.01)
        out = stage.process_batch([item(fault, n) for n, fault in enumerate(MALFORMED)])
    assert [r["error"]["code"] for r in out] == ["describe_failed"] * len(MALFORMED)
    assert len(server.requests) == len(MALFORMED) >= 6


def requests_for(server: FakeOpenAI, fault: str) -> int:
    return sum(f"fault:{fault}" in json.dumps(r["body"]) for r in server.requests)


def test_item_4_a_drip_is_cut_at_the_deadline_on_every_try():
    """The deadline is per try, so max_retries bounds the whole: (tries) x timeout_s."""
    with FakeOpenAI() as server:
        stage = describer_for(server.url, key=False, max_retries=2, backoff_s=0.05)
        started = time.monotonic()
        [record] = stage.process_batch([item("drip")])
        elapsed = time.monotonic() - started
    assert record["error"]["code"] == "describe_timeout"
    assert "gave up after 3 attempts" in record["error"]["message"]
    assert 3 * TIMEOUT_S <= elapsed < 3 * TIMEOUT_S + 1.5
    assert server.sent_bytes["drip"] <= 3 * (TIMEOUT_S + 1)  # a byte a second, cut each time


def test_item_4_an_endless_body_is_read_no_further_than_its_cap():
    """Memory stays within the cap while the server would send for ever."""
    cap = body_cap(MAX_NEW_TOKENS)
    with FakeOpenAI() as server:
        stage = describer_for(server.url, key=False)
        stage.process_batch([clip(0)])  # a first request: lazy imports and pools out of the way
        tracemalloc.start()  # (the fake server runs in this process: its chunks count too)
        [record] = stage.process_batch([item("endless")])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        time.sleep(0.3)  # the server notices the closed connection
    assert record["error"]["code"] == "describe_failed"
    assert peak < 3 * cap + 2**20, f"peak {peak:,} bytes for a cap of {cap:,}"
    assert server.sent_bytes["endless"] < 16 * 2**20  # the cap plus socket buffers, not more


@pytest.mark.parametrize("issue_item, query", [("6", "api-version=2024-06-01"), ("6", "a=1&b=")])
def test_item_6_the_query_string_stays_after_the_path(issue_item, query):
    with FakeOpenAI() as server:
        [record] = describer_for(f"{server.url}/?{query}", key=False).process_batch([clip(0)])
    assert "error" not in record, record.get("error")
    assert [r["query"] for r in server.requests] == [query]


QUERY_SECRET = "Zq9-query-secret"


@pytest.mark.parametrize(
    "query",
    ["api_key", "api-key", "API_KEY", "key", "access_token", "code", "sig",
     "version=1&X-Amz-Credential", "q=sk-abcdef1234567890&x"],
)  # fmt: skip
def test_item_6_a_credential_in_the_query_is_refused_before_any_request(query):
    """Refused, not sent: see transforms/describe/openai_api.py chat_url for why."""
    with pytest.raises(UsageError, match="carries a credential in its query string") as refused:
        describer_for(f"http://127.0.0.1:9/v1?{query}={QUERY_SECRET}", key=False)
    assert QUERY_SECRET not in str(refused.value) and "sk-abcdef" not in str(refused.value)
    assert "describe.api_key_env" in str(refused.value)


# -- One run against every fault at once --------------------------------------------------------
GOOD = 6


def older_lake(lake: Path) -> None:
    """A descriptions table as the previous release wrote it: no describe_finish_reason."""
    schema = TABLES["descriptions"].schema
    old = pa.schema([f for f in schema if f.name != "describe_finish_reason"])
    row = {"item_id": "old", "description": "an older row", "run_id": "r0"}
    row["updated_at"] = pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py()
    write_deltalake(str(lake / "descriptions"), pa.Table.from_pylist([row], schema=old))


def hostile_manifest(path: Path) -> Path:
    """GOOD good items, then one item per fault."""
    rows = [
        {"item_id": f"good-{n}", "title": f"Pasta {n}", "text": "Cooking."} for n in range(GOOD)
    ]
    for _, fault, _ in FAULTS:
        rows.append({"item_id": fault, "title": f"Pasta fault:{fault}", "text": "Cooking."})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def rss_mb() -> float:
    """This process's resident memory, MB (the describer reads answers in its threads)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


class RssWatch:
    """The most this process's resident memory grew while the block ran, MB."""

    def __enter__(self) -> RssWatch:
        self.start = self.peak = rss_mb()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.growth_mb = self.peak - self.start


@pytest.mark.slow
def test_one_run_meets_every_fault_enriches_the_good_items_and_stores_no_secret(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HOSTILE_VLM_KEY", KEY)
    lake, summary = tmp_path / "lake", tmp_path / "summary.json"
    older_lake(lake)
    with FakeOpenAI(api_key=KEY) as server:
        server.echo, server.fault_limit_s = list(SECRETS), 20
        endpoint = server.url.replace("://", f"://{USERINFO}@") + "?api-version=1"
        settings = (
            "describe.backend=openai",
            f"describe.endpoint={endpoint}",
            "describe.model=served/vlm",
            "describe.api_key_env=HOSTILE_VLM_KEY",
            f"describe.timeout_s={TIMEOUT_S}",
            "describe.max_retries=0",
            f"describe.max_new_tokens={MAX_NEW_TOKENS}",
            "describe.concurrency=4",
            "run.max_error_rate=1.0",
        )
        argv = run_argv(hostile_manifest(tmp_path / "m.jsonl"), lake, *settings)
        # a good item first: imports done, models loaded (a run of 33 good items grows no more)
        warm = tmp_path / "warm.jsonl"
        warm.write_text(json.dumps({"item_id": "w", "title": "Pasta", "text": "Cooking."}) + "\n")
        assert main(run_argv(warm, tmp_path / "warm_lake", *settings)) == 0
        capsys.readouterr()
        started = time.monotonic()
        with RssWatch() as memory:
            code = main([*argv, "--summary-json", str(summary)])
        elapsed = time.monotonic() - started
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    print(f"hostile run: {elapsed:.1f} s, RSS growth {memory.growth_mb:.0f} MB")
    # a warm run of good items grows it 60-110 MB here; an endless body read without a cap
    # would add what loopback carries in a second (GBs), and the server's count says it did not
    assert elapsed < 60 and memory.growth_mb < 300

    store = DeltaStore(lake)
    rows = {r["item_id"]: r for r in store.read("descriptions").to_pylist()}
    errors = {r["item_id"]: r for r in store.read("errors").to_pylist()}
    for fault_item, fault, (expected_code, expected) in FAULTS:
        if expected_code is None:
            assert fault in rows and fault not in errors, f"item {fault_item}: {fault}"
            expected(rows[fault])
        else:
            assert errors[fault]["code"] == expected_code, f"item {fault_item}: {errors[fault]}"
    assert all(rows[f"good-{n}"]["description"] for n in range(GOOD))
    assert {r["code"] for r in errors.values()} <= set(ERROR_CODES)
    assert rows["old"]["describe_finish_reason"] is None  # the older release's row still reads
    assert rows["good-0"]["describe_finish_reason"] == "stop"
    assert server.sent_bytes["endless"] < 16 * 2**20
    assert {r["query"] for r in server.requests} == {"api-version=1"}
    assert "Traceback" not in out.err  # item 8: a bad answer is a row, not a crash
    assert all(requests_for(server, fault) == 1 for fault in MALFORMED)  # and not retried

    lake_bytes = b"\n".join(p.read_bytes() for p in sorted(lake.rglob("*")) if p.is_file())
    tables = "\n".join(repr(store.read(n).to_pylist()) for n in TABLES if store.exists(n))
    for where, text in {
        "stdout": out.out,
        "stderr": out.err,
        "tables": tables,
        "summary": summary.read_text(),
    }.items():
        assert not [s for s in SECRETS if s in text], f"a credential is in the {where}"
    assert not [s for s in SECRETS if s.encode() in lake_bytes], "a credential is in a lake file"


def test_item_6_the_cli_refuses_a_key_in_the_query_before_a_lake_exists(tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"item_id": "a", "title": "Pasta", "text": "Cooking."}) + "\n")
    endpoint = f"describe.endpoint=http://127.0.0.1:9/v1?api_key={QUERY_SECRET}"
    argv = run_argv(manifest, tmp_path / "lake", "describe.backend=openai", endpoint)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "carries a credential in its query string" in err and QUERY_SECRET not in err
    assert not (tmp_path / "lake").exists()
