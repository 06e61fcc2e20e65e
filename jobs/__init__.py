"""Entry points: the ``enrich`` CLI (and, later, the spark-submit backfill and SID fit jobs)."""
