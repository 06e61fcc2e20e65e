"""RQ-VAE (TIGER): MLP encoder → L residual codebooks → MLP decoder, trained in torch.

Codebooks start from residual k-means on the encoder's outputs; training uses the
straight-through estimator, a commitment loss, and resets dead codes to live residuals every
epoch. CPU or GPU, seeded for reproducibility. The result is a plain numpy ``Codebook``.
"""

from __future__ import annotations

import logging

import numpy as np

from transforms.semantic_ids.codebook import Codebook, TooFewEmbeddings
from transforms.semantic_ids.metrics import codebook_health
from transforms.semantic_ids.rq_kmeans import _kmeans, effective_codebook_size, nearest

logger = logging.getLogger(__name__)


def _mlp(sizes: list[int]):
    import torch.nn as nn

    layers: list = []
    for i, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(size_in, size_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _layers(module) -> list[tuple[np.ndarray, np.ndarray]]:
    import torch.nn as nn

    return [
        (
            m.weight.detach().cpu().numpy().astype(np.float32),
            m.bias.detach().cpu().numpy().astype(np.float32),
        )
        for m in module
        if isinstance(m, nn.Linear)
    ]


def _kmeans_init(latent: np.ndarray, levels: int, k: int, seed: int) -> np.ndarray:
    residual, books = latent.copy(), []
    for level in range(levels):
        centroids = _kmeans(residual, k, 20, seed + level, 1)
        books.append(centroids)
        residual = residual - centroids[nearest(residual, centroids)[0]]
    return np.stack(books)


def fit_rq_vae(
    embeddings: np.ndarray,
    *,
    levels: int,
    codebook_size: int,
    encoder: str,
    version: str,
    seed: int = 0,
    latent_dim: int = 32,
    hidden: tuple[int, ...] = (256, 128),
    epochs: int = 30,
    batch_size: int = 512,
    lr: float = 1e-3,
    beta: float = 0.25,
    device: str = "cpu",
    collision_slack: float = 0.0,
) -> Codebook:
    """Train an RQ-VAE on ``embeddings`` and return its codebook (with encoder and decoder)."""
    import torch

    data = np.asarray(embeddings, dtype=np.float32)
    if len(data) < 2:
        raise TooFewEmbeddings(f"RQ-VAE needs at least 2 embeddings to fit, got {len(data)}")
    k = effective_codebook_size(codebook_size, len(data), levels)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    enc = _mlp([data.shape[1], *hidden, latent_dim]).to(device)
    dec = _mlp([latent_dim, *reversed(hidden), data.shape[1]]).to(device)
    x_all = torch.from_numpy(data).to(device)
    with torch.no_grad():
        init = _kmeans_init(enc(x_all).cpu().numpy(), levels, k, seed)
    books = torch.nn.Parameter(torch.from_numpy(init).to(device))
    optimizer = torch.optim.Adam([*enc.parameters(), *dec.parameters(), books], lr=lr)
    resets = [0] * levels
    for _epoch in range(epochs):
        usage = torch.zeros(levels, k, device=device)
        for start in range(0, len(data), batch_size):
            x = (
                x_all[torch.from_numpy(rng.permutation(len(data))[:batch_size]).to(device)]
                if len(data) > batch_size
                else x_all
            )
            loss, counts, residuals = _step(enc, dec, books, x, beta)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            usage += counts
            if start + batch_size >= len(data):
                _reset_dead(books, usage, residuals, resets)
    codebook = Codebook(
        version=version,
        method="rq_vae",
        centroids=books.detach().cpu().numpy().astype(np.float32),
        encoder=encoder,
        codebook_size_requested=codebook_size,
        n_fit=len(data),
        config={
            "levels": levels,
            "codebook_size": codebook_size,
            "latent_dim": latent_dim,
            "hidden": list(hidden),
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "beta": beta,
            "seed": seed,
            "collision_slack": collision_slack,
        },
        mlp_encoder=_layers(enc),
        mlp_decoder=_layers(dec),
    )
    codebook.metrics = {**codebook_health(codebook, data), "reset_codes": resets}
    return codebook


def _step(enc, dec, books, x, beta: float):
    """One forward pass: residual quantization with STE; returns loss, code counts, residuals."""
    import torch
    import torch.nn.functional as F

    z = enc(x)
    residual, quantized = z, torch.zeros_like(z)
    commit = torch.zeros((), device=x.device)
    counts, residuals = [], []
    for level in range(books.shape[0]):
        book = books[level]
        codes = torch.cdist(residual.detach(), book.detach()).argmin(1)
        chosen = book[codes]
        commit = (
            commit
            + F.mse_loss(chosen, residual.detach())
            + beta * F.mse_loss(residual, chosen.detach())
        )
        residuals.append(residual.detach())
        counts.append(torch.bincount(codes, minlength=book.shape[0]).float())
        quantized = quantized + chosen
        residual = residual - chosen.detach()
    z_q = z + (quantized - z).detach()  # straight-through estimator
    loss = F.mse_loss(dec(z_q), x) + commit
    return loss, torch.stack(counts), residuals


def _reset_dead(books, usage, residuals, resets: list[int]) -> None:
    """Codes nobody used this epoch jump onto random live residuals of their level."""
    import torch

    with torch.no_grad():
        for level in range(books.shape[0]):
            dead = torch.nonzero(usage[level] == 0).flatten()
            if len(dead):
                pool = residuals[level]
                books[level, dead] = pool[
                    torch.randint(len(pool), (len(dead),), device=pool.device)
                ]
                resets[level] += int(len(dead))
