"""The archive: Avro container files of Kafka records with manifests, written by the archiver."""
