"""Reading inputs and writing outputs: files in, records out, shards written atomically."""

from fineinstructions.io.readers import (
    FieldMapping,
    ReadStats,
    input_files,
    read_documents,
    read_queries,
    read_rows,
)
from fineinstructions.io.writers import ShardWriter, atomic_write, write_json, write_table

__all__ = [
    "FieldMapping",
    "ReadStats",
    "ShardWriter",
    "atomic_write",
    "input_files",
    "read_documents",
    "read_queries",
    "read_rows",
    "write_json",
    "write_table",
]
