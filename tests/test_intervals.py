"""Property tests of the interval algebra against a brute-force model on a small integer grid."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from station import intervals as iv

GRID = 60

pairs = st.lists(st.tuples(st.integers(0, GRID), st.integers(0, GRID)), max_size=8)


def as_set(raw):
    return iv.normalize([(min(a, b), max(a, b)) for a, b in raw])


def points(a):
    """The set of integer points t with [t, t+1) inside a."""
    out = set()
    for s, e in a.tolist():
        out.update(range(s, e))
    return out


def is_normalized(a):
    if len(a) == 0:
        return a.shape == (0, 2)
    return bool(np.all(a[:, 1] > a[:, 0]) and np.all(a[1:, 0] > a[:-1, 1]))


@settings(max_examples=300, deadline=None)
@given(pairs, pairs)
def test_set_operations_match_brute_force(x, y):
    a, b = as_set(x), as_set(y)
    for result, expected in ((iv.union(a, b), points(a) | points(b)),
                             (iv.intersect(a, b), points(a) & points(b)),
                             (iv.difference(a, b), points(a) - points(b))):
        assert is_normalized(result)
        assert points(result) == expected
        assert iv.measure(result) == len(expected)


@settings(max_examples=200, deadline=None)
@given(pairs)
def test_normalize_is_idempotent_and_order_free(x):
    a = as_set(x)
    assert is_normalized(a)
    assert np.array_equal(iv.normalize(a), a)
    assert np.array_equal(as_set(list(reversed(x))), a)


@settings(max_examples=200, deadline=None)
@given(pairs, st.integers(0, GRID), st.integers(0, GRID))
def test_clip_and_complement(x, lo, hi):
    a = as_set(x)
    lo, hi = min(lo, hi), max(lo, hi)
    window = set(range(lo, hi))
    assert points(iv.clip(a, lo, hi)) == points(a) & window
    assert points(iv.complement(a, lo, hi)) == window - points(a)
    assert is_normalized(iv.clip(a, lo, hi))


@settings(max_examples=200, deadline=None)
@given(pairs, st.integers(1, 10))
def test_bridge_merges_exactly_gaps_below_threshold(x, gap):
    a = as_set(x)
    b = iv.bridge(a, gap)
    assert is_normalized(b)
    assert points(a) <= points(b)
    gaps = b[1:, 0] - b[:-1, 1]
    assert np.all(gaps >= gap)
    # every added point lies in a gap of a shorter than the threshold
    added = points(b) - points(a)
    holes = iv.complement(a, int(a[0, 0]) if len(a) else 0, int(a[-1, 1]) if len(a) else 0)
    short = {p for s, e in holes.tolist() if e - s < gap for p in range(s, e)}
    assert added == short


def test_measure_of_hand_example():
    a = iv.normalize([(0, 10), (5, 15), (20, 25)])
    assert a.tolist() == [[0, 15], [20, 25]]
    assert iv.measure(iv.intersect(a, iv.normalize([(12, 22)]))) == 5


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(-50, 200), st.integers(-50, 200)), max_size=40), st.integers(0, 30))
def test_bridged_is_bridge_of_normalize(pairs, gap):
    arr = iv.make(pairs)
    assert iv.bridged(arr, gap).tolist() == iv.bridge(iv.normalize(arr), gap).tolist()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-50, 2000), st.integers(-50, 2000)), min_size=65, max_size=300),
       st.integers(0, 30))
def test_bridged_is_bridge_of_normalize_beyond_the_small_path(pairs, gap):
    arr = iv.make(pairs)
    assert len(arr) > iv.SMALL
    assert iv.bridged(arr, gap).tolist() == iv.bridge(iv.normalize(arr), gap).tolist()
