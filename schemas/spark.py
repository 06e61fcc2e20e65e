"""Spark views of the tables: a StructType derived from the Arrow schema (never written twice),
a reader that works with or without the Delta jars on the classpath, and the store variant
that commits through delta-spark when the jars are there."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from core.signatures import positional_deprecated
from schemas.store import (
    DeltaStore,
    StagedFiles,
    active_files,
    check_compatible,
    checked_request,
    refuse_unknown_columns,
)
from schemas.tables import TABLES, TableName, TableSpec


def spark_type(arrow_type: pa.DataType) -> Any:
    """The Spark SQL type for an Arrow type used in our schemas."""
    from pyspark.sql import types as T

    simple = {
        pa.string(): T.StringType(),
        pa.int32(): T.IntegerType(),
        pa.int64(): T.LongType(),
        pa.float32(): T.FloatType(),
        pa.float64(): T.DoubleType(),
        pa.bool_(): T.BooleanType(),
        pa.binary(): T.BinaryType(),
    }
    if arrow_type in simple:
        return simple[arrow_type]
    if pa.types.is_timestamp(arrow_type):
        return T.TimestampType()
    if pa.types.is_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return T.ArrayType(spark_type(arrow_type.value_type), containsNull=True)
    if pa.types.is_struct(arrow_type):
        return T.StructType(
            [T.StructField(f.name, spark_type(f.type), f.nullable) for f in arrow_type]
        )
    raise TypeError(f"no Spark type for Arrow {arrow_type}")


def spark_schema(name: str) -> Any:
    """The StructType of a table, derived from its Arrow schema in ``schemas.tables``."""
    from pyspark.sql import types as T

    return T.StructType(
        [T.StructField(f.name, spark_type(f.type), f.nullable) for f in TABLES[name].schema]
    )


@positional_deprecated
def read_spark(
    spark: Any,
    lake: str | Path,
    name: TableName,
    *,
    version: int | None = None,
    as_of: datetime | None = None,
    columns: list[str] | None = None,
) -> Any:
    """A Spark DataFrame of a table version. Reads the version's active Parquet files (never
    ``spark.read.parquet(<table dir>)``, which would include files Delta has removed). Refuses
    what ``read_table`` refuses (``BadTableRequest``), before Spark is asked anything."""
    columns = checked_request(name, version, as_of, columns)
    table = DeltaStore(lake).table(name, version=version)
    if as_of is not None:
        table.load_as_version(as_of)
    refuse_unknown_columns(name, columns, [])
    schema = spark_schema(name)
    files = active_files(table)
    frame = (
        spark.read.schema(schema).parquet(*files) if files else spark.createDataFrame([], schema)
    )
    return frame.select(*columns) if columns else frame


DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"


def delta_spark_ready(spark: Any) -> tuple[bool, str]:
    """Whether delta-spark can commit in this session, and why (for the log)."""
    try:
        spark._jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")
    except Exception:  # noqa: BLE001 - py4j raises a generic error for a missing class
        return False, "no Delta jars on the classpath"
    if DELTA_EXTENSION not in (spark.conf.get("spark.sql.extensions", "") or ""):
        return False, f"Delta jars found but spark.sql.extensions lacks {DELTA_EXTENSION}"
    return True, "Delta jars and SQL extension found"


class SparkDeltaStore(DeltaStore):
    """The lake, with MERGE and deletes executed by delta-spark (for clusters where Spark
    owns the Delta tables). Reads stay on delta-rs, and a table that does not exist yet is
    created by delta-rs, so its schema comes from ``schemas.tables`` and its protocol stays
    reader 1 / writer 2 whichever engine wrote it."""

    def __init__(self, lake: str | Path, spark: Any):
        super().__init__(lake)
        self.spark = spark

    def merge_files(self, name: str, uris: list[str]) -> int | None:
        """Staged files MERGE from a DataFrame that Spark reads itself (nothing collected)."""
        if not uris or not self.exists(name):
            return super().merge_files(name, uris)
        frame = self.spark.read.schema(spark_schema(name)).parquet(*uris)
        return self._spark_merge(TABLES[name], frame)

    def _merge_once(self, spec: TableSpec, source: pa.Table | StagedFiles) -> int:
        if not self.exists(spec.name):
            return super()._merge_once(spec, source)
        if isinstance(source, StagedFiles):
            source = source.reader().read_all()
        check_compatible(self.table(spec.name), source.schema, spec.name)
        return self._spark_merge(
            spec, self.spark.createDataFrame(source, schema=spark_schema(spec.name))
        )

    def _spark_merge(self, spec: TableSpec, frame: Any) -> int:
        from delta.tables import DeltaTable as SparkDeltaTable

        (
            SparkDeltaTable.forPath(self.spark, self.path(spec.name))
            .alias("t")
            .merge(frame.alias("s"), f"t.{spec.key} = s.{spec.key}")
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .withSchemaEvolution()
            .execute()
        )
        return self.version(spec.name)

    def delete_keys(self, name: str, keys: list[str]) -> int | None:
        from delta.tables import DeltaTable as SparkDeltaTable
        from pyspark.sql import functions as F

        if not keys or not self.exists(name):
            return self.version(name)
        key = TABLES[name].key
        SparkDeltaTable.forPath(self.spark, self.path(name)).delete(F.col(key).isin(keys))
        return self.version(name)
