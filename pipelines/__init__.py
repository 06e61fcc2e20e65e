"""Thin engine adapters (local loop, Beam, Spark) over the same ``transforms`` stages."""
