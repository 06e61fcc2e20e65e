#!/bin/sh
# Backfill November 2026 from daily manifest partitions (<manifests>/dt=YYYY-MM-DD/*.jsonl)
# on a Spark cluster. Rerunning a day is safe: unchanged items are skipped.
set -eu
spark-submit --master "${SPARK_MASTER:-spark://spark-master.internal:7077}" \
  jobs/backfill.py --manifests s3://media-bucket/manifests --lake s3://lake-bucket/lake \
  --config examples/production/config.yaml --start 2026-11-01 --end 2026-11-30
