"""Join interactions to the Semantic IDs that existed when each interaction happened, one day
at a time, so training never sees features from its future.

    python examples/point_in_time_join.py LAKE INTERACTIONS.csv

INTERACTIONS has columns user_id, item_id, ts (ISO timestamps, UTC).
"""

import sys
from datetime import datetime, timedelta

import pandas as pd

from video_enrich import read_pandas

FEATURES = "semantic_ids"


def features_as_of(lake: str, moment: datetime) -> pd.DataFrame:
    """The SIDs in force at ``moment``: none before the table's first commit."""
    return read_pandas(lake, FEATURES, as_of=moment, columns=["item_id", "sid"])


def point_in_time_join(lake: str, interactions: pd.DataFrame) -> pd.DataFrame:
    """Each interaction with the SID its item had at the start of the interaction's day."""
    interactions = interactions.assign(ts=pd.to_datetime(interactions.ts, utc=True))
    days = []
    for day in sorted(interactions.ts.dt.floor("D").unique()):
        of_day = interactions[interactions.ts.between(day, day + timedelta(days=1), "left")]
        features = features_as_of(lake, day.to_pydatetime())
        days.append(of_day.merge(features, on="item_id", how="left"))
    return pd.concat(days, ignore_index=True)


if __name__ == "__main__":
    joined = point_in_time_join(sys.argv[1], pd.read_csv(sys.argv[2]))
    print(joined.to_string(index=False))
