"""The online feature store: feature views (pure functions of event + entity state), the
persistent Redis key layout, and the state backends (Redis live, memory in replay)."""
