"""The in-process learner harness learns every label of the stream it scored."""

from streamlearn.tools.learner_harness import learn_labels, prepare


def test_every_label_is_learned_once_after_its_event_was_scored():
    settings, loop, codec, wire = prepare(400, 50)
    assert loop.counters.events_scored == 400 and len(wire) > 300
    cpu = learn_labels(settings, loop, codec, wire, 50)
    assert cpu > 0
    assert loop.counters.labels_learned == len(wire) == loop.champion.scored_labels
    assert loop.counters.labels_duplicate == loop.counters.labels_unmatched == 0


def test_the_digest_is_the_same_for_the_same_labels_and_tells_a_changed_label() -> None:
    from streamlearn.schemas import AvroCodec
    from streamlearn.tools.learner_harness import state_digest

    digests = []
    for flip in (False, False, True):
        settings, loop, codec, wire = prepare(300, 50)
        if flip:  # one label learned the other way round
            fb = AvroCodec.default().decode("feedback", wire[10])
            fb["label"] = not fb["label"]
            wire[10] = AvroCodec.default().encoder("feedback")(fb)
        learn_labels(settings, loop, codec, wire, 50)
        digests.append(state_digest(loop))
    assert digests[0] == digests[1] != digests[2]
