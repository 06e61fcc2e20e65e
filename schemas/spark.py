"""Spark views of the tables: a StructType derived from the Arrow schema (never written twice)
and a reader that works with or without the Delta jars on the classpath."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable

from schemas.tables import TABLES


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


def read_spark(
    spark: Any,
    lake: str | Path,
    name: str,
    version: int | None = None,
    as_of: datetime | None = None,
    columns: list[str] | None = None,
) -> Any:
    """A Spark DataFrame of a table version. Reads the version's active Parquet files (never
    ``spark.read.parquet(<table dir>)``, which would include files Delta has removed)."""
    table = DeltaTable(f"{str(lake).rstrip('/')}/{name}", version=version)
    if as_of is not None:
        table.load_as_version(as_of)
    schema = spark_schema(name)
    files = table.file_uris()
    frame = (
        spark.read.schema(schema).parquet(*files) if files else spark.createDataFrame([], schema)
    )
    return frame.select(*columns) if columns else frame
