"""Wire records: the Avro schemas (``<subject>.v<N>.avsc``), the one codec that encodes and
decodes them (:class:`AvroCodec`), input validation (:mod:`.validation`) and the typed record
classes code passes around (:mod:`.records`)."""

from streamlearn.schemas.codec import MAGIC, AvroCodec, InvalidRecord, SchemaVersion

# The codec's former name (it is a codec, not a registry service); kept for one release.
SchemaRegistry = AvroCodec

__all__ = ["MAGIC", "AvroCodec", "InvalidRecord", "SchemaRegistry", "SchemaVersion"]
