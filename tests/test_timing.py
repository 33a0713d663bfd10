"""mnv4_kernels.timing.interleaved: the call counts behind each sample (what the benchmarks' figures mean)."""

import collections

from mnv4_kernels.timing import interleaved


def _counting(names):
    calls = collections.Counter()
    return calls, {n: (lambda n=n: calls.update([n])) for n in names}


def test_inner_and_settle_per_candidate():
    calls, cands = _counting(["a", "b", "c"])
    t = interleaved(cands, warmup=2, repeats=5, inner={"a": 1, "b": 4, "c": 3}, settle=1)
    # warmup + per round (settle + inner)
    assert calls == {"a": 2 + 5 * (1 + 1), "b": 2 + 5 * (1 + 4), "c": 2 + 5 * (1 + 3)}
    assert all(t[n].repeats == 5 and len(t[n].samples_ms) == 5 for n in "abc")


def test_inner_int_applies_to_every_candidate():
    calls, cands = _counting(["a", "b"])
    interleaved(cands, warmup=1, repeats=3, inner=2)
    assert calls == {"a": 1 + 3 * 2, "b": 1 + 3 * 2}


def test_pool_blocks_are_the_runtime_settings(monkeypatch):
    """The round-robin blocks runtimes with thread pools are timed in: settle + inner calls per sample, a sleep
    before each sample (patched out here, counted instead)."""
    import mnv4_kernels.timing as timing

    sleeps = []
    monkeypatch.setattr(timing.time, "sleep", sleeps.append)
    calls, cands = _counting(["ort", "ours"])
    interleaved(cands, warmup=1, repeats=3, **timing.POOL_BLOCKS)
    per_sample = timing.POOL_BLOCKS["settle"] + timing.POOL_BLOCKS["inner"]
    assert calls == {"ort": 1 + 3 * per_sample, "ours": 1 + 3 * per_sample}
    assert sleeps == [timing.POOL_BLOCKS["gap_s"]] * 6 and timing.POOL_BLOCKS["gap_s"] > 0
