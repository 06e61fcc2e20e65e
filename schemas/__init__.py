"""The contract with consumers: table schemas, the Delta store, and the read API."""

from schemas.store import DeltaStore, read_table
from schemas.tables import SCHEMA_VERSION, TABLES, TableSpec

__all__ = ["DeltaStore", "read_table", "SCHEMA_VERSION", "TABLES", "TableSpec"]
