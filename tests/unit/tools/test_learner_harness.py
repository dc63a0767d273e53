"""The in-process learner harness learns every label of the stream it scored."""

from streamlearn.tools.learner_harness import learn_labels, prepare


def test_every_label_is_learned_once_after_its_event_was_scored():
    settings, loop, codec, wire = prepare(400, 50)
    assert loop.counters.events_scored == 400 and len(wire) > 300
    cpu = learn_labels(settings, loop, codec, wire, 50)
    assert cpu > 0
    assert loop.counters.labels_learned == len(wire) == loop.champion.scored_labels
    assert loop.counters.labels_duplicate == loop.counters.labels_unmatched == 0
