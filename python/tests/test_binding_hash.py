# SPDX-License-Identifier: Apache-2.0
"""Hashing from Python, bit for bit against the vectors of tests/check_hash.c
(spec section 4.6) and against build/bin/kvbm-hash."""

import json
import os
import subprocess
from array import array

import numpy as np
import pytest

import kvbm

TOKS12 = list(range(1, 13))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def plh_hex(h, i):
    return h.plh_bytes(i).hex()


def test_upstream_constants_salt_1337():
    h = kvbm.hash_tokens(TOKS12, 4, 1337)
    assert len(h) == 3
    assert h.block_hashes == [14643705804678351452, 16777012769546811212, 483935686894639516]
    assert h.seq_hashes == [14643705804678351452, 4945711292740353085, 12583592247330656132]
    assert [plh_hex(h, i) for i in range(3)] == [
        "0032ce3935fecb729700000000000000", "005128ac8de75b4f0f78e4d7fb2dca5c",
        "00aba8799e9b2033e122b2379d6d3c3d"]
    assert h.router_hashes[:2] == [16014214978980444, 9766101142289469]
    assert h.positions == [0, 1, 2]
    assert h.block_size == 4


def test_salt_zero_vectors():
    h = kvbm.hash_tokens(TOKS12, 4)
    assert h.block_hashes == [8052976908588476977, 13852901005659965728, 12087364272738490135]
    assert h.seq_hashes == [8052976908588476977, 17538018756801271241, 70629693063532910]
    assert [plh_hex(h, i) for i in range(3)] == [
        "001bf07af53d35ba8c40000000000000", "007cd8e3c8e3d1c57241ebd4f4d6ea31",
        "00803ebb553969645ba38f238f4715c9"]


def test_other_vectors():
    assert kvbm.hash_tokens([0, 1, 2, 3], 4, 42).block_hashes == [9654674667387326307]
    assert kvbm.hash_tokens([13, 14, 15, 16], 4, 1337).block_hashes == [135165725823939817]
    assert kvbm.salt_hash(None, "alpha-7b") == 723495307357893745
    assert kvbm.salt_hash("tenant-a", None) == 1948188790972764086
    assert kvbm.salt_hash() == 1337
    assert kvbm.salt_hash("", "") == 1337


def test_bench_e_check_values():
    x, tok = 1, []
    for _ in range(4096):
        x = (x * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        tok.append((x >> 33) % 128256)
    h = kvbm.hash_tokens(np.array(tok, dtype=np.int64), 16, 42)
    assert len(h) == 256
    assert h.block_hashes[0] == 0x8d1d79a1452142fe
    assert h.seq_hashes[255] == 0xecce807585d8929f
    assert plh_hex(h, 0) == "0023475e68514850bf80000000000000"
    assert plh_hex(h, 255) == "3ffb33a01d617624a7f2df90da178822"


def test_against_kvbm_hash_tool():
    tool = os.path.join(ROOT, "build", "bin", "kvbm-hash")
    if not os.access(tool, os.X_OK):
        pytest.skip("build/bin/kvbm-hash not built")
    tokens = [(i * 2654435761) % 200003 for i in range(16 * 300 + 5)]
    out = subprocess.run([tool, "--block-size", "16", "--salt", "99", "--json"],
                         input=" ".join(map(str, tokens)), capture_output=True, text=True,
                         check=True).stdout
    want = json.loads(out)["blocks"]
    h = kvbm.hash_tokens(tokens, 16, 99)
    assert len(h) == len(want) == 300  # crosses the 8/16-bit PLH mode boundary at 256
    assert h.block_hashes == [int(b["block_hash"], 16) for b in want]
    assert h.seq_hashes == [int(b["sequence_hash"], 16) for b in want]
    assert h.router_hashes == [int(b["router_hash"], 16) for b in want]
    assert [h.plh_bytes(i).hex() for i in range(300)] == [b["plh"] for b in want]


def test_partial_block_is_not_hashed():
    assert len(kvbm.hash_tokens(TOKS12[:11], 4)) == 2
    assert len(kvbm.hash_tokens(TOKS12[:3], 4)) == 0
    assert len(kvbm.hash_tokens([], 4)) == 0


@pytest.mark.parametrize("conv", [
    list, tuple, lambda t: array("I", t), lambda t: array("l", t), lambda t: array("Q", t),
    lambda t: np.array(t, dtype=np.uint32), lambda t: np.array(t, dtype=np.int64),
    lambda t: np.array(t, dtype=np.int16), lambda t: array("I", t).tobytes(),
    lambda t: bytearray(array("I", t).tobytes()), lambda t: memoryview(array("I", t)),
    lambda t: np.array(t, dtype=np.uint32)[::-1][::-1], lambda t: range(1, 13),
])
def test_token_containers_hash_alike(conv):
    assert kvbm.hash_tokens(conv(TOKS12), 4, 1337) == kvbm.hash_tokens(TOKS12, 4, 1337)


def test_tokens_grow_like_one_shot():
    t = kvbm.Tokens(4, 1337)
    assert t.extend(TOKS12[:3]) == range(0, 0)
    assert t.extend(TOKS12[3:9]) == range(0, 2)
    assert t.extend([10, 11]) == range(2, 2)
    assert t.extend([12]) == range(2, 3)
    assert t.total == len(t) == 12 and t.blocks == 3
    assert t.hashes() == kvbm.hash_tokens(TOKS12, 4, 1337)
    assert t.hashes(1) == kvbm.hash_tokens(TOKS12, 4, 1337)[1:]
    assert t.hashes(1).block_hashes == kvbm.hash_tokens(TOKS12, 4, 1337).block_hashes[1:]
    t.close()
    t.close()
    with pytest.raises(ValueError):
        t.extend([1])


def test_tokens_uneven_pieces_many_blocks():
    tok = [(i * 7919) % 100000 for i in range(16 * 700 + 3)]
    t = kvbm.Tokens(16, 42)
    at, step = 0, 1
    while at < len(tok):
        t.extend(tok[at:at + step])
        at, step = at + step, step * 3 % 1000 + 1
    assert t.hashes() == kvbm.hash_tokens(tok, 16, 42)
    assert t.hashes().seq_hashes == kvbm.hash_tokens(tok, 16, 42).seq_hashes


def test_hashes_slicing_equality_and_wire_form():
    h = kvbm.hash_tokens(list(range(40)), 4, 7)
    assert len(h[2:5]) == 3 and h[2:5].block_hashes == h.block_hashes[2:5]
    assert h[::2].seq_hashes == h.seq_hashes[::2]
    assert h[-1].seq_hashes == h.seq_hashes[-1:]
    assert h[3] == h[3:4] and h[3] != h[4]
    assert h[2:5] + h[5:] == h[2:]
    wire = [h.plh_bytes(i) for i in range(len(h))]
    assert all(len(w) == 16 for w in wire)
    back = kvbm.Hashes.from_plh_bytes(wire)
    assert back == h and not back.has_block_hashes and back.block_size is None
    assert back.seq_hashes == h.seq_hashes
    assert back.router_hashes == h.router_hashes
    assert back[1:3] == h[1:3]
    with pytest.raises(ValueError):
        back.block_hashes
    with pytest.raises(IndexError):
        h.plh_bytes(len(h))
    with pytest.raises(IndexError):
        h[len(h)]
    assert {h: 1}[kvbm.hash_tokens(list(range(40)), 4, 7)] == 1


def test_plh_bytes_match_the_c_encoder():
    import ctypes
    from kvbm._lib import fn
    h = kvbm.hash_tokens(list(range(64)), 4, 3)
    for i, (hi, lo) in enumerate(h.plhs):
        out = ctypes.create_string_buffer(16)
        fn.plh_to_bytes(hi, lo, out)
        assert out.raw == h.plh_bytes(i)


@pytest.mark.parametrize("tokens,exc,words", [
    ([1, 2, -1, 4], ValueError, "tokens[2] = -1"),
    ([1, 2, 3, 2**32], ValueError, "tokens[3] = 4294967296"),
    ([1, 2.5, 3, 4], TypeError, "tokens[1]"),
    (np.array([1, 2, 3, 2**40]), ValueError, "tokens[3]"),
    (np.array([1, -5, 3, 4], dtype=np.int8), ValueError, "tokens[1] = -5"),
    (np.array([1.0, 2, 3, 4]), TypeError, "float64"),
    (np.zeros((2, 4), dtype=np.uint32), ValueError, "1-dimensional"),
    (array("q", [1, 2, -3, 4]), ValueError, "tokens[2] = -3"),
    (array("d", [1, 2, 3, 4]), TypeError, "typecode 'd'"),
    (b"\x01\x00\x00", ValueError, "multiple of 4"),
    ("abcd", TypeError, "str"),
    (None, TypeError, "NoneType"),
])
def test_bad_tokens_name_the_culprit(tokens, exc, words):
    with pytest.raises(exc) as ei:
        kvbm.hash_tokens(tokens, 4)
    assert words in str(ei.value)


@pytest.mark.parametrize("bs", [0, 3, 2048, -4])
def test_bad_block_size(bs):
    with pytest.raises(kvbm.InvalidArgument, match="power of two"):
        kvbm.hash_tokens(TOKS12, bs)
    with pytest.raises(ValueError):
        kvbm.Tokens(bs)


def test_bad_salt_and_strings():
    with pytest.raises(ValueError):
        kvbm.hash_tokens(TOKS12, 4, -1)
    with pytest.raises(TypeError):
        kvbm.hash_tokens(TOKS12, 4, "1")
    with pytest.raises(TypeError):
        kvbm.salt_hash(5)
    with pytest.raises(ValueError):
        kvbm.salt_hash("a\0b")
    with pytest.raises(ValueError):
        kvbm.Hashes.from_plh_bytes([b"short"])
    with pytest.raises(TypeError):
        kvbm.Hashes.from_plh_bytes(b"0123456789abcdef")
