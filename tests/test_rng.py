"""Known answers for ``specdec_fast.Rng`` (xoshiro256+ seeded by splitmix64).

The generator is re-implemented here in pure Python from the published
definitions (Blackman & Vigna, prng.di.unimi.it: splitmix64.c,
xoshiro256plus.c) and compared bit for bit with the compiled one.  The
literal constants below were checked against this pure-Python version.
"""
import array
import copy
import os
import pickle

import numpy as np
import pytest

import specdec_fast
from specdec_fast import Rng
from conftest import run_python

MASK = (1 << 64) - 1
SEEDS = [0, 1, 42, 1234567, 2**32 - 1, 2**63, 2**64 - 1]


def splitmix64(x):
    """One step: ``(new_state, output)``."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return x, z ^ (z >> 31)


def seeded_state(seed):
    """Four successive splitmix64 outputs from ``seed``."""
    s = []
    x = seed
    for _ in range(4):
        x, out = splitmix64(x)
        s.append(out)
    return s


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & MASK


def xoshiro_next(s):
    """xoshiro256+ step on the list ``s`` in place; returns the output."""
    result = (s[0] + s[3]) & MASK
    t = (s[1] << 17) & MASK
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = rotl(s[3], 45)
    return result


JUMP = [0x180EC6D33CFD0ABA, 0xD5A61266F0C9392C, 0xA9582618E03FC9AA, 0x39ABDC4529B1661C]


def xoshiro_jump(s):
    """The published jump (2**128 steps), in place."""
    t = [0, 0, 0, 0]
    for word in JUMP:
        for b in range(64):
            if word & (1 << b):
                for w in range(4):
                    t[w] ^= s[w]
            xoshiro_next(s)
    s[:] = t


def to_double(x):
    return (x >> 11) * 2.0**-53


# --------------------------------------------------------------------------
# Literal known answers (checked here against the pure-Python definitions too).

SPLITMIX_1234567 = [6457827717110365317, 3203168211198807973, 9817491932198370423,
                    4593380528125082431, 16408922859458223821]
XOSHIRO_1234 = [5, 211106232532999, 211106635186183, 9223759065350669058,
                9250833439874351877]


def test_splitmix64_known_answer():
    """splitmix64 from 1234567: the published first five outputs."""
    x = 1234567
    outs = []
    for _ in range(5):
        x, out = splitmix64(x)
        outs.append(out)
    assert outs == SPLITMIX_1234567


def test_xoshiro_known_answer_pure_python():
    s = [1, 2, 3, 4]
    assert [xoshiro_next(s) for _ in range(5)] == XOSHIRO_1234


def test_xoshiro_known_answer_compiled():
    """Rng with state (1, 2, 3, 4) gives the published first outputs."""
    rng = Rng(0)
    rng.state = {"bit_generator": "xoshiro256+", "s": (1, 2, 3, 4)}
    assert [rng.next_uint64() for _ in range(5)] == XOSHIRO_1234


def test_seeding_is_four_splitmix_outputs():
    """Rng(1234567)'s state is the first four splitmix64 outputs from 1234567."""
    assert Rng(1234567).state == {"bit_generator": "xoshiro256+",
                                  "s": tuple(SPLITMIX_1234567[:4])}


# --------------------------------------------------------------------------
# Bit-for-bit against the pure-Python generator.

@pytest.mark.parametrize("seed", SEEDS)
def test_state_after_seeding(seed):
    state = Rng(seed).state
    assert state["bit_generator"] == "xoshiro256+"
    assert state["s"] == tuple(seeded_state(seed))
    assert all(type(w) is int for w in state["s"])


@pytest.mark.parametrize("seed", SEEDS)
def test_raw_outputs_match(seed):
    rng = Rng(seed)
    s = seeded_state(seed)
    got = [rng.next_uint64() for _ in range(3000)]
    want = [xoshiro_next(s) for _ in range(3000)]
    assert got == want
    assert all(0 <= x <= MASK for x in got)
    assert rng.state["s"] == tuple(s)


@pytest.mark.parametrize("seed", SEEDS)
def test_doubles_are_top_53_bits(seed):
    """random() == (next >> 11) * 2**-53, for scalars and for random(n)."""
    s = seeded_state(seed)
    want = [to_double(xoshiro_next(s)) for _ in range(4000)]
    rng = Rng(seed)
    scalars = [rng.random() for _ in range(2000)]
    assert all(type(x) is float for x in scalars)
    arr = rng.random(2000)
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float64 and arr.shape == (2000,)
    assert scalars == want[:2000]
    assert arr.tolist() == want[2000:]
    assert all(0.0 <= x < 1.0 for x in want)


def test_random_n_equals_successive_scalars():
    a, b = Rng(7), Rng(7)
    for n in [0, 1, 2, 5, 1000]:
        arr = a.random(n)
        assert arr.shape == (n,)
        assert arr.tolist() == [b.random() for _ in range(n)]
    assert a.state == b.state
    assert Rng(3).random(np.int64(4)).tolist() == Rng(3).random(4).tolist()


def test_random_rejects_bad_size():
    rng = Rng(1)
    with pytest.raises(ValueError, match="size"):
        rng.random(-1)
    with pytest.raises(TypeError, match="size"):
        rng.random(2.0)
    with pytest.raises(TypeError):
        rng.random("3")
    for huge in (2**62, 2**70):       # more than memory can hold: ValueError, not OverflowError
        with pytest.raises(ValueError, match="size"):
            rng.random(huge)
        with pytest.raises(ValueError, match="size"):
            rng.next_uint64(huge)
    assert rng.state == Rng(1).state


def test_largest_double_below_one_is_possible():
    """An output with all top 53 bits set gives 1 - 2**-53, never 1.0."""
    rng = Rng(0)
    # s0 + s3 == 2**64 - 1  ->  (next >> 11) * 2**-53 == 1 - 2**-53
    rng.state = {"bit_generator": "xoshiro256+", "s": (MASK - 5, 9, 10, 5)}
    assert rng.random() == 1.0 - 2.0**-53
    rng.state = {"bit_generator": "xoshiro256+", "s": (MASK, 9, 10, 0)}
    assert rng.next_uint64() == MASK


@pytest.mark.parametrize("seed", [0, 99, 2**64 - 1])
def test_jump_matches_published_jump(seed):
    rng = Rng(seed)
    s = seeded_state(seed)
    for _ in range(3):
        assert rng.jump() is rng
        xoshiro_jump(s)
        assert rng.state["s"] == tuple(s)
        assert [rng.next_uint64() for _ in range(50)] == [xoshiro_next(s) for _ in range(50)]


def test_jump_differs_from_no_jump():
    a, b = Rng(5), Rng(5)
    a.jump()
    assert a.state != b.state
    assert a.random(10).tolist() != b.random(10).tolist()


# --------------------------------------------------------------------------
# State, pickling, seeds.

def test_state_round_trip():
    a = Rng(11)
    a.random(17)
    st = a.state
    b = Rng(0)
    b.state = st
    assert b.state == st
    assert b.random(100).tolist() == a.random(100).tolist()


def test_state_words_may_be_any_iterable():
    rng = Rng(1)
    rng.state = {"bit_generator": "xoshiro256+", "s": iter([1, 2, 3, 4])}
    assert rng.state["s"] == (1, 2, 3, 4)


def test_state_accepts_any_four_nonzero_words():
    rng = Rng(0)
    rng.state = {"bit_generator": "xoshiro256+", "s": [0, 0, 0, 1]}
    assert rng.state["s"] == (0, 0, 0, 1)
    s = [0, 0, 0, 1]
    assert [rng.next_uint64() for _ in range(20)] == [xoshiro_next(s) for _ in range(20)]
    rng.state = {"bit_generator": "xoshiro256+", "s": (MASK, MASK, MASK, MASK)}
    assert rng.state["s"] == (MASK,) * 4


@pytest.mark.parametrize("bad, exc", [
    ({"bit_generator": "xoshiro256+", "s": (0, 0, 0, 0)}, ValueError),
    ({"bit_generator": "xoshiro256+", "s": (1, 2, 3)}, ValueError),
    ({"bit_generator": "xoshiro256+", "s": (1, 2, 3, 4, 5)}, ValueError),
    ({"bit_generator": "xoshiro256+", "s": (1, 2, 3, 2**64)}, ValueError),
    ({"bit_generator": "xoshiro256+", "s": (1, 2, 3, -1)}, ValueError),
    ({"bit_generator": "PCG64", "s": (1, 2, 3, 4)}, ValueError),
    ({"s": (1, 2, 3, 4)}, ValueError),
    ((1, 2, 3, 4), ValueError),
    ({"bit_generator": "xoshiro256+", "s": (1.0, 2, 3, 4)}, TypeError),
    ({"bit_generator": "xoshiro256+", "s": (True, 2, 3, 4)}, TypeError),   # as seeds reject bool
    ({"bit_generator": "xoshiro256+", "s": None}, TypeError),
    # Iterable, but not four ordered words: keys, unordered, characters, wrong arrays.
    ({"bit_generator": "xoshiro256+", "s": {0: 1, 1: 2, 2: 3, 3: 4}}, TypeError),
    ({"bit_generator": "xoshiro256+", "s": {1, 2, 3, 4}}, TypeError),
    ({"bit_generator": "xoshiro256+", "s": frozenset({1, 2, 3, 4})}, TypeError),
    ({"bit_generator": "xoshiro256+", "s": {1: 0, 2: 0, 3: 0, 4: 0}.keys()}, TypeError),
    ({"bit_generator": "xoshiro256+", "s": b"\x01\x02\x03\x04"}, TypeError),
    ({"bit_generator": "xoshiro256+", "s": "1234"}, TypeError),
    ({"bit_generator": "xoshiro256+", "s": np.array([[1, 2], [3, 4]])}, TypeError),
    ({"bit_generator": "xoshiro256+", "s": np.array([1, 2, 3, 4], dtype=object)}, TypeError),
    ({"bit_generator": "xoshiro256+", "s": np.array([1.0, 2, 3, 4])}, TypeError),
    ({"bit_generator": "xoshiro256+", "s": memoryview(array.array("d", [1, 2, 3, 4]))},
     TypeError),
])
def test_bad_state_rejected_and_state_unchanged(bad, exc):
    rng = Rng(3)
    before = rng.state
    with pytest.raises(exc):
        rng.state = bad
    assert rng.state == before


@pytest.mark.parametrize("words", [{0: 1, 1: 2, 2: 3, 3: 4}, {1, 2, 3, 4}, b"\x01\x02\x03\x04"])
def test_state_words_that_are_not_a_sequence_are_named(words):
    with pytest.raises(TypeError, match=r"state\['s'\] must be a sequence of four ints .* not "
                       + type(words).__name__):
        Rng(3).state = {"bit_generator": "xoshiro256+", "s": words}


def test_state_words_from_sequences_and_integer_arrays():
    rng = Rng(1)
    for words in ([1, 2, 3, 4], (1, 2, 3, 4), range(1, 5), np.array([1, 2, 3, 4]),
                  np.array([1, 2, 3, 4], dtype=np.uint64), np.array([1, 2, 3, 4], np.uint8),
                  memoryview(array.array("Q", [1, 2, 3, 4])), array.array("q", [1, 2, 3, 4])):
        rng.state = {"bit_generator": "xoshiro256+", "s": (9, 9, 9, 9)}
        rng.state = {"bit_generator": "xoshiro256+", "s": words}
        assert rng.state["s"] == (1, 2, 3, 4)
        assert all(type(w) is int for w in rng.state["s"])


@pytest.mark.parametrize("seed", [0, 12345, 2**64 - 1])
def test_pickle_and_copy_round_trip(seed):
    rng = Rng(seed)
    rng.random(3)
    for clone in (pickle.loads(pickle.dumps(rng)), copy.deepcopy(rng), copy.copy(rng)):
        assert type(clone) is Rng
        assert clone is not rng
        assert clone.state == rng.state
    clone = pickle.loads(pickle.dumps(rng, protocol=pickle.HIGHEST_PROTOCOL))
    assert clone.random(50).tolist() == rng.random(50).tolist()


class LabelledRng(Rng):
    pass


def test_pickling_a_subclass_keeps_its_type_and_attributes():
    rng = LabelledRng(7)
    rng.label = "draft"
    rng.random(3)
    clone = pickle.loads(pickle.dumps(rng))
    assert type(clone) is LabelledRng and clone.label == "draft"
    assert clone.random(20).tolist() == rng.random(20).tolist()


class SlottedRng(Rng):
    __slots__ = ("tag", "unset")


@pytest.mark.parametrize("clone", [copy.copy, copy.deepcopy,
                                   lambda r: pickle.loads(pickle.dumps(r))],
                         ids=["copy", "deepcopy", "pickle"])
def test_copies_of_a_subclass_keep_its_slots(clone):
    """A subclass's __slots__ values survive copy and pickle, as they do for any class
    (an unset slot stays unset)."""
    rng = SlottedRng(8)
    rng.tag = "request-17"
    twin = clone(rng)
    assert type(twin) is SlottedRng and twin.tag == "request-17"
    assert not hasattr(twin, "unset")
    assert twin.state == rng.state


class CustomStateRng(Rng):
    __slots__ = ("tag",)

    def __getstate__(self):
        return {"tag": self.tag.upper()}

    def __setstate__(self, state):
        self.tag = state["tag"]


@pytest.mark.parametrize("clone", [copy.copy, copy.deepcopy,
                                   lambda r: pickle.loads(pickle.dumps(r))],
                         ids=["copy", "deepcopy", "pickle"])
def test_copies_of_a_subclass_use_its_own_getstate(clone):
    """A subclass's __getstate__ / __setstate__ pair is honoured, as for any class."""
    rng = CustomStateRng(9)
    rng.tag = "req-17"
    twin = clone(rng)
    assert type(twin) is CustomStateRng and twin.tag == "REQ-17"
    assert twin.state == rng.state


FORKED_DRAWS = """
import os
import specdec_fast

specdec_fast.seed(5)              # even a seeded parent: its children draw afresh
draws = []
for _ in range(2):
    read, write = os.pipe()
    if os.fork() == 0:
        os.write(write, repr(specdec_fast.get_default_rng().random()).encode())
        os._exit(0)
    os.close(write)
    os.wait()
    draws.append(float(os.read(read, 100)))
draws.append(specdec_fast.get_default_rng().random())
print(draws)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_forked_children_reseed_the_default_generator(tmp_path):
    """As the random module does after fork: workers forked from one process must not
    repeat its draws, nor each other's.  (Two children and the parent drawing the same
    double from distinct fresh seeds: probability about 2**-52.)"""
    done = run_python(FORKED_DRAWS, tmp_path)
    assert done.returncode == 0, done.stderr
    first, second, parent = eval(done.stdout)
    assert parent == Rng(5).random()              # the parent's own stream is untouched
    assert len({first, second, parent}) == 3


def test_pickled_state_is_independent():
    rng = Rng(1)
    clone = pickle.loads(pickle.dumps(rng))
    rng.random(10)
    assert clone.state == Rng(1).state


@pytest.mark.parametrize("seed", [-1, 2**64, 2**100, -(2**64)])
def test_seed_out_of_range(seed):
    with pytest.raises(ValueError, match="seed"):
        Rng(seed)


@pytest.mark.parametrize("seed", [1.0, 0.5, "1", b"1", True, [1], 1j])
def test_seed_wrong_type(seed):
    with pytest.raises(TypeError, match="seed"):
        Rng(seed)


def test_numpy_integer_seeds():
    assert Rng(np.uint64(2**64 - 1)).state == Rng(2**64 - 1).state
    assert Rng(np.int32(5)).state == Rng(5).state


def test_none_seed_uses_entropy():
    """Rng() and Rng(None) draw fresh seeds (two collide with chance ~2**-64)."""
    states = {Rng().state["s"], Rng(None).state["s"], Rng().state["s"]}
    assert len(states) == 3


def test_repr_shows_state():
    rng = Rng(4)
    assert str(rng.state["s"][0]) in repr(rng)


def test_module_seed_reseeds_default_generator():
    """specdec_fast.seed(n) sets the default generator to Rng(n)'s state."""
    default = specdec_fast.get_default_rng()
    assert isinstance(default, Rng)
    specdec_fast.seed(2024)
    assert default.state == Rng(2024).state
    assert specdec_fast.get_default_rng() is default
    specdec_fast.seed(None)
    assert default.state != Rng(2024).state
    with pytest.raises(ValueError):
        specdec_fast.seed(-5)
    with pytest.raises(TypeError):
        specdec_fast.seed(1.5)
