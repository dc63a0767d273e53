"""The Redis key layout is persistent data: pin every name, so a move of code cannot orphan it."""

from __future__ import annotations

from streamlearn.featurestore.keys import Keys
from streamlearn.settings import Settings


def test_every_redis_key_name_is_pinned():
    k = Keys("sl:v1", "default")
    assert [k.entity("card-7"), k.served("e:1"), k.pending("e:1"), k.learned("e:1")] == [
        "sl:v1:ent:card-7", "sl:v1:srv:e:1", "sl:v1:pend:e:1", "sl:v1:m:default:lrn:e:1"]
    assert [k.learn_log, k.checkpoint, k.checkpoint_id, k.status, k.control, k.receipt("w1")] == [
        "sl:v1:m:default:log", "sl:v1:m:default:ckpt", "sl:v1:m:default:ckpt-id", "sl:v1:m:default:status",
        "sl:v1:m:default:control", "sl:v1:m:default:receipt:w1"]
    assert k.worker("streamlearn-v1", 42) == "sl:v1:worker:streamlearn-v1:42"


def test_the_default_settings_name_the_same_keys():
    s = Settings()
    assert (s.redis_prefix, s.model_name) == ("sl:v1", "default")
    assert Keys.from_settings(s) == Keys("sl:v1", "default")


def test_a_project_view_keeps_its_state_in_its_own_namespace_and_built_in_views_keep_theirs():
    from streamlearn.featurestore.definitions import get_view
    from streamlearn.project import view_namespace

    k = Keys("pay:v1", "fraud", view="payments.v2")
    assert [k.entity("u1"), k.served("e1"), k.pending("e1")] == [
        "pay:v1:ent:payments.v2:u1", "pay:v1:srv:payments.v2:e1", "pay:v1:pend:payments.v2:e1"]
    assert k.learned("e1") == "pay:v1:m:fraud:lrn:e1" and k.view_record("payments", 2) == "pay:v1:fv:payments:v2"
    assert view_namespace(get_view("entity_v1")) == "" and view_namespace(get_view("raw_v1")) == ""
