"""pj.random: Threefry bits against an independent implementation, determinism, jit
agreement and the distributions' statistics."""
import math

import ml_dtypes
import numpy as np
import pytest

import polyjit as pj
import polyjit.numpy as pnp
from agreement import assert_eager_matches_jit
from polyjit import lax, random

M32 = 0xFFFFFFFF


def threefry2x32_reference(k0, k1, x0, x1):
    """Threefry-2x32, 20 rounds (Salmon et al., SC'11), on Python ints."""
    rot = lambda v, r: ((v << r) | (v >> (32 - r))) & M32  # noqa: E731
    ks = [k0, k1, k0 ^ k1 ^ 0x1BD11BDA]
    rotations = [(13, 15, 26, 6), (17, 29, 16, 24)]
    x0, x1 = (x0 + ks[0]) & M32, (x1 + ks[1]) & M32
    for block in range(5):
        for r in rotations[block % 2]:
            x0 = (x0 + x1) & M32
            x1 = rot(x1, r) ^ x0
        x0 = (x0 + ks[(block + 1) % 3]) & M32
        x1 = (x1 + ks[(block + 2) % 3] + block + 1) & M32
    return x0, x1


def reference_bits(seed, n):
    """JAX's layout: counters 0..n-1 split into halves (odd n padded with 0), hashed pairwise."""
    k0, k1 = (seed >> 32) & M32, seed & M32
    half = (n + 1) // 2
    c = list(range(n)) + [0] * (n % 2)
    pairs = [threefry2x32_reference(k0, k1, a, b) for a, b in zip(c[:half], c[half:])]
    return ([p[0] for p in pairs] + [p[1] for p in pairs])[:n]


def test_reference_implementation_known_answer():
    # the Random123 known-answer test for threefry2x32_20 with zero key and counter
    assert threefry2x32_reference(0, 0, 0, 0) == (0x6B200159, 0x99BA4EFE)


def test_random_bits_equal_the_reference(backend):
    got = np.asarray(random.random_bits(random.key(0), (4,)))
    assert got.dtype == np.uint32
    assert got.tolist() == reference_bits(0, 4)


@pytest.mark.parametrize("seed,n", [(0, 5), (42, 1), (2**40 + 7, 6)])
def test_random_bits_odd_counts_and_wide_seeds(backend, seed, n):
    assert np.asarray(random.random_bits(random.key(seed), (n,))).tolist() == reference_bits(seed, n)


def test_split_of_key_0_matches_jax(backend):
    assert np.asarray(random.split(random.key(0))).tolist() == [[4146024105, 967050713],
                                                                [2718843009, 1272950319]]


def test_64_bit_words_take_high_halves_first(backend):
    bits = np.asarray(random.random_bits(random.key(3), (3,), 64))
    ref = reference_bits(3, 6)
    assert bits.dtype == np.uint64
    assert bits.tolist() == [(hi << 32) | lo for hi, lo in zip(ref[:3], ref[3:])]


def test_same_key_same_bits(backend):
    k = random.key(7)
    first, second = random.normal(k, (10,)), random.normal(k, (10,))
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))


@pytest.mark.parametrize("sample", [
    lambda k: random.random_bits(k, (3, 5)), lambda k: random.uniform(k, (7,)),
    lambda k: random.normal(k, (2, 3)), lambda k: random.split(k, 3),
    lambda k: random.randint(k, (6,), -3, 9), lambda k: random.categorical(k, pnp.zeros((2, 4))),
    lambda k: random.permutation(k, 8), lambda k: random.fold_in(k, 5),
    lambda k: random.bernoulli(k, 0.3, (5,)), lambda k: random.truncated_normal(k, -1.0, 2.0, (4,)),
    lambda k: random.gumbel(k, (4,)), lambda k: random.uniform(k, (3,), pnp.bfloat16)])
def test_eager_and_jitted_samples_agree(backend, sample):
    """Same bits eagerly and under jit; float samples made from them agree as
    tests/agreement.py says (exactly on numpy, within a few ulps on compiled backends)."""
    k = random.key(11)
    assert_eager_matches_jit(sample(k), pj.jit(sample)(k))


@pytest.fixture(params=["numpy", "opencl", "cuda", "webgpu"])
def every_backend(request):
    """Each backend in turn, also without POLYJIT_TEST_BACKENDS; skipped with the reason
    when it cannot run here."""
    try:
        pj.backends.get_backend(request.param)
    except Exception as e:  # missing package or device, named
        pytest.skip(f"backend {request.param!r} unavailable: {e}")
    return request.param


SEEDS_AND_SHAPES = ([0, 42, 2**40 + 7], [(5,), (2, 3), (4, 1, 3)])


def _all_bits(keys, bit_width=32):
    """random_bits for every (key, shape), raveled into one array: one kernel to build on a
    compiled backend instead of nine."""
    seeds, shapes = SEEDS_AND_SHAPES
    return lax.concatenate([lax.reshape(random.random_bits(keys[i], s, bit_width), (math.prod(s),))
                            for i in range(len(seeds)) for s in shapes], 0)


def _floats(keys):
    return [f(keys[i], (3, 4)) for i in range(len(SEEDS_AND_SHAPES[0]))
            for f in (random.uniform, random.normal)]


def test_same_key_same_bits_on_every_backend(every_backend):
    seeds, shapes = SEEDS_AND_SHAPES
    keys = np.stack([np.asarray(random.key(s)) for s in seeds])   # traced: nothing folds
    bits = np.asarray(pj.jit(_all_bits, backend=every_backend)(keys))
    ref = [reference_bits(seed, math.prod(s)) for seed in seeds for s in shapes]
    assert bits.dtype == np.uint32 and bits.tolist() == [b for r in ref for b in r]
    if every_backend != "webgpu":   # WGSL has no 64-bit integers (the backend says so)
        words = np.asarray(pj.jit(lambda k: _all_bits(k, 64), backend=every_backend)(keys))
        want = np.asarray(pj.jit(lambda k: _all_bits(k, 64), backend="numpy")(keys))
        assert words.dtype == np.uint64 and words.tolist() == want.tolist()
    # the floats made from those bits: uniform is bit manipulation and exact arithmetic (one
    # float32 rounding at most); normal goes through log, sqrt and cos, whose float32 results
    # may differ by a few ulps between math libraries
    got = pj.jit(_floats, backend=every_backend)(keys)
    want = pj.jit(_floats, backend="numpy")(keys)
    eps = np.finfo(np.float32).eps
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype == np.float32
        tol = eps if i % 2 == 0 else 8 * eps
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=("uniform", "normal")[i % 2])


def test_split_keys_differ(backend):
    keys = np.asarray(random.split(random.key(1), 8))
    parent = np.asarray(random.key(1))
    rows = {tuple(r) for r in keys.tolist()} | {tuple(parent.tolist())}
    assert len(rows) == 9


def test_fold_in_is_deterministic_and_data_dependent(backend):
    k = random.key(2)
    a, b = np.asarray(random.fold_in(k, 1)), np.asarray(random.fold_in(k, 2))
    assert a.tolist() != b.tolist()
    np.testing.assert_array_equal(a, np.asarray(random.fold_in(k, 1)))
    k0, k1 = np.asarray(k).tolist()
    assert a.tolist() == list(threefry2x32_reference(k0, k1, 0, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.float64])
def test_uniform_range(backend, dtype):
    u = np.asarray(random.uniform(random.key(3), (20000,), dtype, -2.0, 3.0)).astype(np.float64)
    assert np.asarray(random.uniform(random.key(3), (2,), dtype)).dtype == np.dtype(dtype)
    assert u.min() >= -2.0 and u.max() < 3.0
    assert abs(u.mean() - 0.5) < 0.05 and u.min() < -1.9 and u.max() > 2.9


def test_uniform_with_array_bounds(backend):
    u = np.asarray(random.uniform(random.key(4), (1000, 2), minval=np.array([0.0, 10.0]),
                                  maxval=np.array([1.0, 11.0])))
    assert (u[:, 0] < 1).all() and (u[:, 1] >= 10).all()


def test_normal_mean_and_variance(backend):
    z = np.asarray(random.normal(random.key(5), (100_000,))).astype(np.float64)
    # standard errors: 1/sqrt(n) = 0.0032 for the mean, sqrt(2/n) = 0.0045 for the variance
    assert abs(z.mean()) < 0.016 and abs(z.var() - 1) < 0.025
    assert np.isfinite(z).all() and abs(np.mean(z ** 3)) < 0.05   # symmetric


def test_normal_dtype(backend):
    assert random.normal(random.key(0), (3,), pnp.float16).dtype == np.float16
    assert random.normal(random.key(0), (3,), pnp.float64).dtype == np.float64


def test_bernoulli_rate(backend):
    b = np.asarray(random.bernoulli(random.key(6), 0.3, (50_000,)))
    assert b.dtype == np.bool_ and abs(b.mean() - 0.3) < 0.01
    assert random.bernoulli(random.key(6), np.full((2, 3), 0.5)).shape == (2, 3)


def test_randint_range_and_dtype(backend):
    r = np.asarray(random.randint(random.key(7), (10_000,), -3, 5, pnp.int8))
    assert r.dtype == np.int8 and r.min() == -3 and r.max() == 4


def test_categorical_frequencies(backend):
    p = np.array([0.1, 0.2, 0.7])
    s = np.asarray(random.categorical(random.key(8), np.log(p), shape=(30_000,)))
    assert s.dtype == np.int32
    np.testing.assert_allclose(np.bincount(s, minlength=3) / s.size, p, atol=0.015)


def test_categorical_shapes_and_axis(backend):
    logits = np.log(np.array([[0.98, 0.01, 0.01], [0.01, 0.01, 0.98]]))
    k = random.key(9)
    assert random.categorical(k, logits).shape == (2,)
    assert random.categorical(k, logits, shape=(5, 2)).shape == (5, 2)
    assert random.categorical(k, logits.T, axis=0, shape=(4, 2)).shape == (4, 2)
    many = np.asarray(random.categorical(k, logits, shape=(500, 2)))
    assert (many[:, 0] == 0).mean() > 0.9 and (many[:, 1] == 2).mean() > 0.9
    with pytest.raises(ValueError, match="batch shape"):
        random.categorical(k, logits, shape=(2, 3))


def test_permutation_and_shuffle(backend):
    p = np.asarray(random.permutation(random.key(10), 20))
    assert sorted(p.tolist()) == list(range(20)) and p.tolist() != list(range(20))
    x = np.arange(12).reshape(6, 2)
    s = np.asarray(random.permutation(random.key(10), x))
    assert sorted(s[:, 0].tolist()) == [0, 2, 4, 6, 8, 10] and (s[:, 1] == s[:, 0] + 1).all()
    assert sorted(np.asarray(random.shuffle(random.key(1), np.arange(5))).tolist()) == list(range(5))


def test_truncated_normal_bounds(backend):
    t = np.asarray(random.truncated_normal(random.key(12), -0.5, 1.0, (20_000,)))
    assert t.min() > -0.5 and t.max() < 1.0 and 0.1 < t.mean() < 0.35


def test_gumbel_mean(backend):
    g = np.asarray(random.gumbel(random.key(13), (50_000,))).astype(np.float64)
    assert np.isfinite(g).all() and abs(g.mean() - np.euler_gamma) < 0.03


def test_bad_keys_and_seeds():
    with pytest.raises(TypeError, match="PRNG key"):
        random.normal(np.zeros(3, np.uint32))
    with pytest.raises(TypeError, match="int seed"):
        random.key(1.5)
