import threading

import pytest

from graviti_dist.sampling import prefetch


def test_prefetch_yields_everything_in_order():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))


def test_prefetch_raises_the_producers_error_after_its_items():
    def items():
        yield 1
        yield 2
        raise ValueError("bad shard")

    got = []
    with pytest.raises(ValueError, match="bad shard"):
        for item in prefetch(items()):
            got.append(item)
    assert got == [1, 2]


def test_leaving_early_stops_the_producer():
    produced = []

    def items():
        for i in range(10_000):
            produced.append(i)
            yield i

    for item in prefetch(items(), depth=2):
        if item == 3:
            break
    assert not any(t.name == "graviti-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(produced) < 10  # bounded by the queue depth, not the whole stream


def test_cpu_batches_are_sampled_in_line_not_beside_the_model():
    # On the CPU a sampling thread would compete with torch's threads for the same cores.
    from graviti_dist.sampling import to_model

    class Batch:
        def to(self, device, non_blocking=False):
            return threading.current_thread().name

    assert list(to_model(iter([Batch(), Batch()]), "cpu")) == [threading.current_thread().name] * 2
