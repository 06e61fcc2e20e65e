"""Semantic IDs: residual quantization of embeddings, dedup suffixes, and health metrics."""

from transforms.semantic_ids.codebook import Codebook, TooFewEmbeddings
from transforms.semantic_ids.dedup import assign_dedup_suffixes, sid_string
from transforms.semantic_ids.rq_kmeans import effective_codebook_size, fit_rq_kmeans

__all__ = [
    "Codebook",
    "TooFewEmbeddings",
    "assign_dedup_suffixes",
    "sid_string",
    "effective_codebook_size",
    "fit_rq_kmeans",
]
