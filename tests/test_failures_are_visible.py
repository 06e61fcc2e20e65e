"""Through `enrich run`: bad usage exits 2 with one line; a data or storage failure exits 1 with
its cause (and its traceback with -v); a failed codebook fit fails the run visibly; a config
change that needs a refit is refused unless asked for. The describer is the openai backend
against a local fake server, so a run costs decoding and the real sentence encoder."""

import pytest

from core.config import EncodeConfig
from jobs.cli import main
from schemas.rows import utc_now
from schemas.store import DeltaStore
from tests.cli_helpers import run_argv
from tests.fake_openai_server import FakeOpenAI
from tests.test_truthful_runs import clips, one_line_error, served
from transforms.encode import encoder_id

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    with FakeOpenAI() as running:
        yield running


def enrich(source, lake, server, *settings: str, flags: tuple[str, ...] = ()) -> int:
    return main([*flags, *run_argv(source, lake, *served(server.url), *settings), "--no-report"])


def statuses(lake) -> list[str]:
    runs = DeltaStore(lake).read("runs").to_pylist()
    return [r["status"] for r in sorted(runs, key=lambda r: r["started_at"])]


def test_arrow_invalid_in_the_lake_exits_1_with_its_cause_and_a_traceback_with_v(
    tmp_path, server, capsys, caplog
):
    lake, folder = tmp_path / "lake", clips(tmp_path / "in", ["a.mp4", "b.mp4"])
    assert enrich(folder, lake, server) == 0
    for part in (lake / "descriptions").glob("*.parquet"):
        part.write_bytes(b"PAR1 this is not a Parquet file")
    capsys.readouterr()

    assert enrich(folder, lake, server) == 1
    message = one_line_error(capsys)
    assert "ArrowInvalid" in message and "Parquet magic bytes not found" in message

    caplog.clear()
    assert enrich(folder, lake, server, flags=("-v",)) == 1
    assert "Traceback" in caplog.text and "pyarrow.lib.ArrowInvalid" in caplog.text
    assert statuses(lake)[1:] == ["failed", "failed"]
    capsys.readouterr()

    assert enrich(folder, lake, server, "semantic_ids.levelz=2") == 2  # a bad --set key
    err = capsys.readouterr().err
    assert err.count("enrich: error:") == 1 and "Traceback" not in err
    assert "unknown key 'semantic_ids.levelz' - remove it or check the spelling" in err


def test_a_failed_codebook_fit_fails_the_run_but_a_too_small_corpus_is_a_note(
    tmp_path, server, capsys
):
    tiny = tmp_path / "tiny"
    assert enrich(clips(tmp_path / "one", ["a.mp4"]), tiny, server) == 0
    assert "note: semantic_ids skipped: need at least 2 embeddings" in capsys.readouterr().out
    assert statuses(tiny) == ["succeeded"]

    # Vectors of another size under the same encoder: the fit cannot stack them.
    lake, now = tmp_path / "lake", utc_now()
    encoder = encoder_id(EncodeConfig())
    DeltaStore(lake).merge(
        "embeddings",
        [
            {"item_id": f"old{i}", "embedding": [0.5] * 8, "dim": 8, "encoder": encoder}
            | {"run_id": "seed", "updated_at": now}
            for i in range(2)
        ],
    )
    assert enrich(clips(tmp_path / "in", ["a.mp4"]), lake, server) == 1
    message = one_line_error(capsys)
    assert "fitting the lake's first Semantic-ID codebook failed (ValueError" in message
    assert statuses(lake) == ["sids_failed"]
    assert DeltaStore(lake).read("descriptions")["item_id"].to_pylist() == ["a.mp4"]


def test_a_config_change_that_needs_a_refit_is_refused_unless_asked_for(tmp_path, server, capsys):
    lake, folder = tmp_path / "lake", clips(tmp_path / "in", ["a.mp4", "b.mp4"])
    assert enrich(folder, lake, server) == 0  # the first run on an empty lake fits
    store = DeltaStore(lake)
    [first] = store.read("codebooks")["codebook_version"].to_pylist()
    capsys.readouterr()

    assert enrich(folder, lake, server, "semantic_ids.levels=2") == 2
    message = one_line_error(capsys)
    assert "no codebook of this lake fits the config (rq_kmeans 2x256" in message
    assert f"it has {first} (rq_kmeans 3x256" in message
    assert "`enrich fit-sids --promote always --assign`" in message and "--refit-sids" in message
    assert statuses(lake) == ["succeeded"] and store.version("codebooks") == 0
    assert not list(lake.glob("_staging/*/_plan.json"))  # refused before planning any work

    argv = [*run_argv(folder, lake, *served(server.url), "semantic_ids.levels=2"), "--no-report"]
    assert main([*argv, "--refit-sids"]) == 0
    versions = set(store.read("codebooks")["codebook_version"].to_pylist())
    [second] = versions - {first}
    sids = store.read("semantic_ids").to_pylist()
    assert {r["codebook_version"] for r in sids} == {second} and len(sids) == 2
    assert enrich(folder, lake, server, "semantic_ids.levels=2") == 0  # now it fits: pinned


def test_assign_sids_refuses_a_surprise_refit_too(tmp_path, capsys):
    lake, now, encoder = tmp_path / "lake", utc_now(), encoder_id(EncodeConfig())
    store = DeltaStore(lake)
    vectors = [[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]]
    store.merge(
        "embeddings",
        [
            {"item_id": f"i{n}", "embedding": v, "dim": 2, "encoder": encoder, "run_id": "r"}
            | {"updated_at": now}
            for n, v in enumerate(vectors)
        ],
    )
    small = ["--set", "semantic_ids.codebook_size=2", "--set", "semantic_ids.sentencepiece_vocab=0"]
    assert main(["assign-sids", "--lake", str(lake), *small]) == 0  # the first fit
    assert main(["assign-sids", "--lake", str(lake), *small, "--set", "semantic_ids.levels=2"]) == 2
    assert "no codebook of this lake fits the config (rq_kmeans 2x2" in one_line_error(capsys)
    assert store.version("codebooks") == 0 and store.version("semantic_ids") == 0
    allow = ["--set", "semantic_ids.levels=2", "--set", "semantic_ids.refit=allow"]
    assert main(["assign-sids", "--lake", str(lake), *small, *allow]) == 0
    [refitted] = [r for r in store.read("codebooks").to_pylist() if r["levels"] == 2]
    sids = store.read("semantic_ids")["codebook_version"].to_pylist()
    assert sids == [refitted["codebook_version"]] * 4  # every item re-coded onto it
