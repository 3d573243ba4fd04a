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


def test_sampler_threads_apply_to_the_producer_thread_only():
    from graviti_dist._dgl import dgl

    before = dgl.utils.get_num_threads()

    def items():
        for _ in range(3):
            yield dgl.utils.get_num_threads()  # read in the producer thread

    assert list(prefetch(items(), sampler_threads=1)) == [1, 1, 1]
    assert dgl.utils.get_num_threads() == before
