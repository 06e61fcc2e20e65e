"""Real text for bench/semantic_ids.py: Debian's English package descriptions.

``apt-get update`` into a private lists folder (the system's apt state is untouched) fetches
Debian bookworm's Translation-en index: about 60,000 distinct, human-written package
descriptions. An item's text is the one-line synopsis plus the first paragraph of the long
description. The index and the encoded vectors are cached under ~/.cache/video-enrich/bench.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

CACHE = Path.home() / ".cache" / "video-enrich" / "bench"
LISTS = CACHE / "debian-lists"
INDEX_GLOB = "*_dists_bookworm_main_i18n_Translation-en"
DEBIAN_SOURCE = "deb http://deb.debian.org/debian bookworm main\n"
DESCRIPTION = re.compile(r"^Description-en: (.*)\n?((?: .*\n?)*)", re.M)


def fetch_translation_index() -> Path:
    """Debian bookworm's English description index, fetched once with apt-get."""
    found = sorted(LISTS.glob(INDEX_GLOB))
    if found:
        return found[0]
    if shutil.which("apt-get") is None:
        raise RuntimeError("the real-text corpus needs apt-get (a Debian or Ubuntu machine)")
    (LISTS / "partial").mkdir(parents=True, exist_ok=True)
    sources = LISTS.parent / "debian-bookworm.list"
    sources.write_text(DEBIAN_SOURCE)
    options = {
        "Dir::State::Lists": LISTS,
        "Dir::Etc::SourceList": sources,
        "Dir::Etc::SourceParts": "/nonexistent",
        "APT::Sandbox::User": "root",
        "Acquire::Languages": "en",
        "Acquire::GzipIndexes": "false",
        "Acquire::IndexTargets::deb::Packages::DefaultEnabled": "false",
    }
    command = ["apt-get", "update", "-qq"]
    for key, value in options.items():
        command += ["-o", f"{key}={value}"]
    subprocess.run(command, check=True, timeout=600)
    found = sorted(LISTS.glob(INDEX_GLOB))
    if not found:
        raise RuntimeError(f"apt-get update wrote no {INDEX_GLOB} under {LISTS}")
    return found[0]


def package_descriptions(index_text: str) -> list[str]:
    """Distinct 'synopsis. first paragraph' texts of a Translation-en index, sorted."""
    texts = set()
    for match in DESCRIPTION.finditer(index_text):
        paragraph = []
        for line in match.group(2).splitlines():
            if line.strip() == ".":
                break
            paragraph.append(line.strip())
        texts.add(f"{match.group(1).strip()}. {' '.join(paragraph)}".strip())
    return sorted(texts)


def encode_cached(texts: list[str], name: str) -> np.ndarray:
    """``texts`` through the pipeline's encode stage, cached by content and encoder."""
    from core.config import EncodeConfig
    from transforms.encode import EncodeStage

    config = EncodeConfig(batch_size=128)
    key = hashlib.sha256(json.dumps([texts, config.model]).encode()).hexdigest()[:16]
    cached = CACHE / f"sid_{name}_{key}.npy"
    if cached.exists():
        return np.load(cached)
    stage = EncodeStage(config)
    stage.setup()
    vectors = stage.encode_texts(texts)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(cached, vectors)
    return vectors


def debian_text_data() -> np.ndarray:
    """The Debian description corpus, encoded (the first call fetches and encodes it)."""
    return encode_cached(package_descriptions(fetch_translation_index().read_text()), "debian")
