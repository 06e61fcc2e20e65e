"""Benchmark: RQ-KMeans and RQ-VAE (ours) against faiss.ResidualQuantizer, same L×K = 3×256.

Data: 100,000 × 384 synthetic embeddings, a Gaussian mixture of 1,000 clusters, L2-normalized
(not real text: making 100k distinct real sentences and encoding them takes ~30 min here).
Each method runs in its own process so peak memory is its own. Measures fit + assign time,
reconstruction MSE, unique fraction before dedup and per-level usage. Writes
bench/results/semantic_ids.json. Goals: RQ-KMeans time ≤ FAISS, MSE ≤ FAISS, unique ≥ FAISS;
the ratio printed last is the worst of time/FAISS, MSE/FAISS and FAISS/unique (≤ 1.0 passes).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N, DIM, CLUSTERS, LEVELS, K = 100_000, 384, 1_000, 3, 256


def data() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(CLUSTERS, DIM))
    spread = rng.uniform(0.2, 0.6, CLUSTERS)[:, None]
    labels = rng.integers(0, CLUSTERS, N)
    points = centres[labels] + spread[labels] * rng.normal(size=(N, DIM))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def summarize(codes: np.ndarray, reconstruction: np.ndarray, x: np.ndarray, seconds: float) -> dict:
    usage = [round(float(np.unique(codes[:, level]).size / K), 4) for level in range(LEVELS)]
    return {
        "fit_assign_s": round(seconds, 2),
        "reconstruction_mse": round(float(((x - reconstruction) ** 2).sum(1).mean()), 6),
        "unique_fraction": round(len(Counter(map(tuple, codes.tolist()))) / len(x), 4),
        "per_level_usage": usage,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run_rq_kmeans(x: np.ndarray) -> dict:
    from transforms.semantic_ids.rq_kmeans import fit_rq_kmeans

    started = time.perf_counter()
    book = fit_rq_kmeans(
        x,
        levels=LEVELS,
        codebook_size=K,
        iters=25,
        redo=1,
        seed=0,
        encoder="bench",
        version="bench",
    )
    codes = book.encode(x)
    return summarize(codes, book.reconstruct(codes), x, time.perf_counter() - started)


def run_rq_vae(x: np.ndarray) -> dict:
    from transforms.semantic_ids.rq_vae import fit_rq_vae

    started = time.perf_counter()
    book = fit_rq_vae(
        x,
        levels=LEVELS,
        codebook_size=K,
        encoder="bench",
        version="bench",
        epochs=8,
        batch_size=1024,
        latent_dim=64,
        seed=0,
    )
    codes = book.encode(x)
    return summarize(codes, book.reconstruct(codes), x, time.perf_counter() - started)


def run_faiss(x: np.ndarray) -> dict:
    import faiss

    started = time.perf_counter()
    quantizer = faiss.ResidualQuantizer(DIM, LEVELS, 8)
    quantizer.train(x)
    packed = quantizer.compute_codes(x)
    reconstruction = quantizer.decode(packed)
    codes = np.stack([packed[:, level] for level in range(LEVELS)], axis=1).astype(np.int64)
    return summarize(codes, reconstruction, x, time.perf_counter() - started)


def _child(name: str, queue) -> None:
    queue.put(globals()[f"run_{name}"](data()))


def isolated(name: str) -> dict:
    queue = mp.get_context("spawn").Queue()
    process = mp.get_context("spawn").Process(target=_child, args=(name, queue))
    process.start()
    result = queue.get()
    process.join()
    print(name, result, flush=True)
    return result


def main() -> None:
    results = {name: isolated(name) for name in ("rq_kmeans", "rq_vae", "faiss")}
    ours, faiss_rq = results["rq_kmeans"], results["faiss"]
    ratios = {
        "time": ours["fit_assign_s"] / faiss_rq["fit_assign_s"],
        "mse": ours["reconstruction_mse"] / faiss_rq["reconstruction_mse"],
        "unique": faiss_rq["unique_fraction"] / ours["unique_fraction"],
    }
    result = {
        "benchmark": "semantic_ids",
        "data": f"{N}x{DIM} Gaussian mixture, {CLUSTERS} clusters",
        "levels": LEVELS,
        "codebook_size": K,
        "methods": results,
        "ratios_vs_faiss": {k: round(v, 3) for k, v in ratios.items()},
        "goal": "RQ-KMeans time <= FAISS, MSE <= FAISS, unique >= FAISS",
        "ratio": round(max(ratios.values()), 3),
    }
    (ROOT / "bench" / "results" / "semantic_ids.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )
    print(json.dumps(result, indent=2))
    print(f"ratio {result['ratio']}")


if __name__ == "__main__":
    main()
