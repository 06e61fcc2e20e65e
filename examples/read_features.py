"""Read the features of a lake in pandas and polars, and stack the embeddings for a model.

python examples/read_features.py LAKE
"""

import sys

import numpy as np
import polars as pl

from video_enrich import read_pandas, read_table


def main(lake: str) -> None:
    descriptions = read_pandas(lake, "descriptions", columns=["item_id", "title", "description"])
    sids = pl.read_delta(f"{lake}/semantic_ids", columns=["item_id", "sid", "prefix_ngrams"])
    embeddings = read_table(lake, "embeddings", columns=["item_id", "embedding"])
    vectors = np.stack(embeddings["embedding"].to_numpy(zero_copy_only=False))
    print(f"{len(descriptions)} descriptions, {sids.height} SIDs, embeddings {vectors.shape}")
    for row in sids.sort("item_id").iter_rows(named=True):
        print(f"{row['item_id']}: {row['sid']}")


if __name__ == "__main__":
    main(sys.argv[1])
