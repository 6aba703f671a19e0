# SPDX-License-Identifier: Apache-2.0
"""Bad input from Python: a clear exception each, nothing crashes, and the
pool passes check(lock=True) afterwards (every test ends with it)."""

import os
import signal

import numpy as np
import pytest

import kvbm

BS = 4


def toks(nblocks, start=1):
    return list(range(start, start + nblocks * BS))


def registered(pool, nblocks, start=1):
    h = kvbm.hash_tokens(toks(nblocks, start), BS)
    b = pool.allocate(nblocks)
    pool.stage(b, h)
    pool.register(b)
    return b, h


def sound(pool):
    assert pool.check(lock=True) == []


@pytest.mark.parametrize("call", [
    lambda p, b, h: p.allocate("3"),
    lambda p, b, h: p.allocate(2.0),
    lambda p, b, h: p.allocate(None),
    lambda p, b, h: p.stage(b.ids.tolist(), h),
    lambda p, b, h: p.stage(b, "hashes"),
    lambda p, b, h: p.stage(b, [1, 2, 3]),
    lambda p, b, h: p.match(None),
    lambda p, b, h: p.match([1, 2]),
    lambda p, b, h: p.match(h.seq_hashes),
    lambda p, b, h: p.presence(np.zeros(3)),
    lambda p, b, h: p.release(None),
    lambda p, b, h: p.release("abc"),
    lambda p, b, h: p.release(b.ids),
    lambda p, b, h: p.register(12),
    lambda p, b, h: p.register(b, tokens="abcd"),
    lambda p, b, h: p.block_info("x"),
    lambda p, b, h: p.read_events("0"),
    lambda p, b, h: p.prometheus({"a": 1}),
    lambda p, b, h: kvbm.Pool(123),
])
def test_wrong_types(pool, call):
    b = pool.allocate(3)
    h = kvbm.hash_tokens(toks(3), BS)
    with pytest.raises(TypeError):
        call(pool, b, h)
    pool.release(b)
    assert pool.available() == 64
    sound(pool)


@pytest.mark.parametrize("kw,exc", [
    (dict(block_count="x"), TypeError), (dict(block_count=0), ValueError),
    (dict(block_size=3), ValueError), (dict(block_size=1 << 20), ValueError),
    (dict(backend="bogus"), ValueError), (dict(dup_policy="maybe"), ValueError),
    (dict(tier="a-tier-name-too-long"), ValueError), (dict(max_procs=1000), ValueError),
    (dict(event_ring=100), ValueError), (dict(mode=0o1777), ValueError),
])
def test_bad_config_is_refused_before_any_pool_exists(pool_name, kw, exc):
    with pytest.raises(exc):
        kvbm.Pool(pool_name, create=True, **kw)
    with pytest.raises(kvbm.NoSuchPool):
        kvbm.Pool(pool_name)


def test_bad_names(pool):
    for name in ("", "a/b", ".hidden", "x" * 200, "sp ace"):
        with pytest.raises(kvbm.BadName):
            kvbm.Pool(name, create=True)
    with pytest.raises(ValueError):
        kvbm.Pool("nul\0byte", create=True)
    sound(pool)


def test_wrong_lengths(pool):
    b = pool.allocate(3)
    h = kvbm.hash_tokens(toks(3), BS)
    with pytest.raises(kvbm.InvalidArgument, match="3 blocks but 2 hashes"):
        pool.stage(b, h[:2])
    assert all(pool.block_info(x)["state"] == "mutable" for x in b)
    pool.stage(b, h)
    with pytest.raises(kvbm.WrongSize, match="11 tokens for 3 blocks"):
        pool.register(b, toks(3)[:11])
    assert pool.block_info(b[0])["state"] == "staged"
    with pytest.raises(kvbm.InvalidArgument, match="one block"):
        pool.block_info(b)
    pool.register(b, toks(3))
    pool.release(b)
    sound(pool)


def test_block_size_mismatch(pool):
    h8 = kvbm.hash_tokens(toks(6), 8)  # the pool's block size is 4
    b = pool.allocate(3)
    with pytest.raises(kvbm.WrongSize, match="block size 8, the pool's is 4"):
        pool.stage(b, h8)
    with pytest.raises(kvbm.WrongSize):
        pool.match(h8)
    with pytest.raises(kvbm.WrongSize):
        pool.presence(h8)
    # hashes without a known block size: the library's own check
    bare = kvbm.Hashes.from_plh_bytes(h8.plh_bytes_list())
    with pytest.raises(kvbm.WrongSize) as ei:
        pool.stage(b, bare, block_size=8)
    assert ei.value.call in ("kvbm_stage_block", "kvbm_stage_blocks")
    assert all(pool.block_info(x)["state"] == "mutable" for x in b)
    pool.release(b)
    sound(pool)


@pytest.mark.parametrize("bad", [[-1] + [0] * 11, [0] * 11 + [2**32],
                                 np.array([0] * 11 + [2**33])])
def test_tokens_not_fitting_u32(pool, bad):
    b = pool.allocate(3)
    pool.stage(b, kvbm.hash_tokens(toks(3), BS))
    with pytest.raises(ValueError, match="does not fit in a u32"):
        pool.register(b, bad)
    with pytest.raises(ValueError, match="does not fit in a u32"):
        kvbm.hash_tokens(bad, BS)
    assert pool.block_info(b[0])["state"] == "staged"
    pool.release(b)
    sound(pool)


def test_handles_from_another_pool(pool, pool_name):
    with kvbm.Pool(pool_name + "-b", create=True, block_count=8, block_size=BS) as other:
        theirs = other.allocate(2)
        with pytest.raises(kvbm.ForeignHandle):
            pool.release(theirs)
        with pytest.raises(kvbm.ForeignHandle):
            pool.release(list(theirs))  # Block values name their pool too
        with pytest.raises(kvbm.ForeignHandle):
            pool.block_info(theirs[0])
        with pytest.raises(kvbm.ForeignHandle):
            pool.stage(theirs, kvbm.hash_tokens(toks(2), BS))
        # a second attachment of the same pool: holds are per attachment
        with kvbm.Pool(pool.name) as twin:
            mine, h = registered(pool, 2)
            with pytest.raises(kvbm.ForeignHandle):
                twin.release(mine)
            with pytest.raises(kvbm.ForeignHandle):
                kvbm.Blocks.concat(mine, twin.allocate(1))
            pool.release(mine)
        other.release(theirs)
        assert other.check(lock=True) == []
    kvbm.destroy(pool_name + "-b")
    sound(pool)


def test_closed_pool_and_its_handles(pool_name):
    p = kvbm.Pool(pool_name, create=True, block_count=16, block_size=BS)
    b, h = registered(p, 2)
    p.close()
    for call in (lambda: p.release(b), lambda: p.match(h), p.available, p.metrics,
                 lambda: p.allocate(1), p.info, p.check, p.reap, lambda: p.stage(b, h)):
        with pytest.raises(kvbm.PoolClosed):
            call()
    with kvbm.Pool(pool_name) as q:
        # closing gave the holds back; the old handles belong to the closed Pool
        assert q.available() == 16
        with pytest.raises(kvbm.ForeignHandle):
            q.release(b)
        m = q.match(h)
        assert m.ids == b.ids
        q.release(m)
        sound(q)


def test_double_release_is_not_held(pool):
    b, _ = registered(pool, 3)
    pool.release(b)
    with pytest.raises(kvbm.NotHeld):
        pool.release(b)
    sound(pool)


def test_stale_handle_after_recycle(pool):
    old = pool.allocate(1)
    pool.release(old)
    new = pool.allocate(64)  # takes every block, the old slot included
    assert old.ids[0] in new.ids
    with pytest.raises(kvbm.StaleHandle):
        pool.block_info(old[0])
    with pytest.raises(kvbm.StaleHandle):
        pool.release(old)
    with pytest.raises(kvbm.StaleHandle):
        pool.stage(old, kvbm.hash_tokens(toks(1), BS))
    pool.release(new)
    sound(pool)


def test_stage_is_all_or_nothing(pool):
    b = pool.allocate(3)
    h = kvbm.hash_tokens(toks(3), BS)
    pool.stage(b[2:], h[2:])  # the third is STAGED already: staging it again fails
    with pytest.raises(kvbm.WrongState) as ei:
        pool.stage(b, h)
    assert "block 2" in str(ei.value)
    assert [pool.block_info(x)["state"] for x in b] == ["mutable", "mutable", "staged"]
    pool.release(b)
    sound(pool)


def test_wrong_state_calls(pool):
    b = pool.allocate(2)
    with pytest.raises(kvbm.WrongState):
        pool.register(b)  # MUTABLE, not STAGED
    with pytest.raises(kvbm.WrongState):
        pool.clone(b)
    with pytest.raises(kvbm.WrongState):
        pool.unstage(b)
    pool.release(b)
    sound(pool)


def test_events_bad_cursor_and_max(pool):
    with pytest.raises(ValueError):
        pool.read_events(-1)
    with pytest.raises(ValueError):
        pool.read_events(0, max=0)
    with pytest.raises(kvbm.OutOfRange):
        pool.read_events(pool.events_head() + 5)
    sound(pool)


def test_use_after_fork_is_refused_in_the_child(pool):
    b, h = registered(pool, 3)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            seen = []
            for call in (pool.available, lambda: pool.match(h), lambda: pool.release(b),
                         lambda: pool.allocate(1), lambda: pool.check(lock=True)):
                try:
                    call()
                    seen.append("ok")
                except kvbm.Forked:
                    seen.append("forked")
            pool.close()  # frees the child's copy only
            with kvbm.Pool(pool.name) as mine:  # a fresh attachment works
                m = mine.match(h)
                seen.append("match %d" % len(m))
                mine.release(m)
            os.write(w, repr(seen).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    out = os.read(r, 4096).decode()
    os.close(r)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, out
    assert out == repr(["forked"] * 5 + ["match 3"])
    # the parent's attachment is untouched, its holds still its own
    assert pool.block_info(b[0])["holds"] == 1
    pool.release(b)
    sound(pool)
    assert pool.info()["procs_attached"] == 1


@pytest.mark.parametrize("hook,call", [
    ("_match", lambda p, h: p.match(h)),
    ("_allocate", lambda p, h: p.allocate(5)),
    ("_allocate", lambda p, h: p.allocate(5, evicted=True)),
])
def test_interrupt_right_after_the_c_call_gives_handles_back(pool, monkeypatch, hook, call):
    """KeyboardInterrupt raised between a C call's return and our use of its
    result (where Python runs a signal handler): the handles the call made
    are given back, not leaked."""
    import kvbm.pool as kp
    b, h = registered(pool, 8)
    pool.release(b)
    real = getattr(kp, hook)

    def interrupted(*args):
        real(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(kp, hook, interrupted)
    with pytest.raises(KeyboardInterrupt):
        call(pool, h)
    monkeypatch.undo()
    m = pool.metrics()
    assert m["inflight_immutable"] == 0 and m["inflight_mutable"] == 0
    assert pool.available() == 64
    sound(pool)


def test_sigint_storm_over_a_loop_of_calls(pool):
    """SIGINTs every millisecond while a loop allocates, stages, registers,
    matches and releases: those landing inside the binding raise
    KeyboardInterrupt there, the interpreter goes on, the pool stays
    sound, and closing the attachment gives back whatever the
    interrupted code dropped."""
    import threading
    import time
    hashes = [kvbm.hash_tokens(toks(4, 100 * i), BS) for i in range(16)]
    stop = threading.Event()
    main = threading.get_ident()

    def storm():
        while not stop.is_set():
            signal.pthread_kill(main, signal.SIGINT)
            time.sleep(0.001)

    interrupts = rounds = 0
    armed = True

    inside = os.path.dirname(kvbm.__file__)

    def on_sigint(signum, frame):
        # what Python's default handler does, for the signals that land
        # inside the binding (the test's own loop lines are not its subject)
        if armed and frame is not None and frame.f_code.co_filename.startswith(inside):
            signal.default_int_handler(signum, frame)

    old = signal.signal(signal.SIGINT, on_sigint)
    th = threading.Thread(target=storm)
    th.start()
    end = time.monotonic() + 1.5
    stopping = False
    try:
        while True:
            try:
                if not stopping and time.monotonic() > end:
                    stopping = True
                    stop.set()
                if stopping:
                    th.join()  # every signal sent is delivered before it returns
                    break
                h = hashes[rounds % 16]
                b = pool.allocate(4)
                pool.stage(b, h)
                pool.register(b)
                pool.release(b)
                pool.release(pool.match(h))
                rounds += 1
            except KeyboardInterrupt:
                interrupts += 1
            except kvbm.KvbmError:
                pass  # e.g. NotHeld after an interrupted release
    finally:
        armed = False
        stop.set()
        signal.signal(signal.SIGINT, old)
    assert interrupts > 10 and rounds > 10
    sound(pool)
    name = pool.name
    pool.close()
    with kvbm.Pool(name) as again:
        assert again.available() == again.total() == 64
        sound(again)


def test_interrupt_while_open_waits_for_a_creator(pool_name):
    """A creator holds the pool file's initialisation lock (here a helper
    process holding it, as a creator stuck initialising would): an open
    waiting for it takes a KeyboardInterrupt within one wait slice, and
    once the creator is gone the pool opens and is sound."""
    import subprocess
    import sys
    import time
    path = os.path.join(os.environ["KVBM_SHM_DIR"], "kvbm." + pool_name)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR)\n"
         "fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)\n"
         "print('locked', flush=True)\n"
         "time.sleep(60)\n", path], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        old = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        t0 = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                kvbm.Pool(pool_name, create=True, block_count=16, block_size=BS,
                          open_timeout_ms=30000)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert time.monotonic() - t0 < 5  # not the 30 s timeout
        with pytest.raises(kvbm.Initializing):  # a short timeout expires cleanly
            kvbm.Pool(pool_name, create=True, block_count=16, block_size=BS,
                      open_timeout_ms=200)
    finally:
        holder.kill()
        holder.wait()
    with kvbm.Pool(pool_name, create=True, block_count=16, block_size=BS) as p:
        assert p.info()["procs_attached"] == 1
        sound(p)


def test_hashes_made_by_hand_must_agree_with_their_bytes(pool):
    # every C call trusts a Hashes' count against its buffers: a count
    # larger than the bytes made presence() read 16 x 10^8 bytes (segfault)
    with pytest.raises(ValueError, match="plh must be 1600000000 bytes"):
        pool.presence(kvbm.Hashes(None, b"", 10 ** 8))
    with pytest.raises(ValueError, match="need their bytes"):
        kvbm.Hashes(None, None, 3)
    with pytest.raises(ValueError, match="n must be an int"):
        kvbm.Hashes(None, b"", -1)
    with pytest.raises(ValueError, match="full must be 64 bytes"):
        kvbm.Hashes(b"\0" * 32, None, 2)
    h = kvbm.hash_tokens(list(range(1, 9)), 4)
    again = kvbm.Hashes(None, b"".join(
        h.plh_bytes(i)[:8][::-1] + h.plh_bytes(i)[8:][::-1] for i in range(len(h))), len(h))
    assert [again.plh_bytes(i) for i in range(2)] == [h.plh_bytes(i) for i in range(2)]
    assert pool.check(lock=True) == []
