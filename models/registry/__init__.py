"""The model registry: versions, lineage, stages and audit trail, over a Redis or directory store."""

from streamlearn.models.registry.store import DirectoryStore, RedisStore, RegistryError, RegistryStore, open_store
from streamlearn.models.registry.versions import ModelRegistry, ModelVersion, Transition, open_registry

__all__ = ["DirectoryStore", "ModelRegistry", "ModelVersion", "RedisStore", "RegistryError", "RegistryStore",
           "Transition", "open_registry", "open_store"]
