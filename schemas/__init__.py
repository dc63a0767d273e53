"""Avro schemas (``*.avsc``) and the registry that encodes and decodes them."""

from streamlearn.schemas.codec import MAGIC, InvalidRecord, SchemaRegistry, SchemaVersion

__all__ = ["MAGIC", "InvalidRecord", "SchemaRegistry", "SchemaVersion"]
