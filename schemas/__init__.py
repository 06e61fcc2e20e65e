"""The contract with consumers: table schemas, the Delta store, and the read API.

from schemas import read_table, read_pandas, read_spark
read_table("lake", "semantic_ids")                 # latest, as Arrow
read_table("lake", "semantic_ids", version=3)      # a table version
read_pandas("lake", "descriptions", as_of=datetime(2026, 11, 1, tzinfo=UTC))
read_spark(spark, "lake", "embeddings")            # a Spark DataFrame
"""

from schemas.spark import read_spark, spark_schema
from schemas.store import BadTableRequest, DeltaStore, LakeError, read_pandas, read_table
from schemas.tables import SCHEMA_VERSION, TABLES, TableSpec

__all__ = [
    "BadTableRequest",
    "DeltaStore",
    "LakeError",
    "read_table",
    "read_pandas",
    "read_spark",
    "spark_schema",
    "SCHEMA_VERSION",
    "TABLES",
    "TableSpec",
]
