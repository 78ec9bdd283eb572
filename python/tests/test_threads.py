"""Several Python threads on one pool at once (the library runs outside the GIL): every
object's contents are verified at the end, and the pool's invariants hold."""

import random
import threading

import zsmalloc


def run_threads(targets, timeout=60):
    errors = []

    def wrap(fn, *args):
        try:
            fn(*args)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]


def test_threads_share_a_pool(pool):
    shared = {}
    seed = random.Random(7)
    for _ in range(64):
        size = seed.randint(1, 4096)
        h = pool.malloc(size)
        d = seed.randbytes(size)
        pool.write(h, d)
        shared[h] = d
    shared_list = list(shared.items())
    results = {}
    stop = threading.Event()

    def worker(tid):
        rng = random.Random(tid)
        mine = {}
        for step in range(2500):
            op = rng.random()
            if op < 0.35 or not mine:
                size = rng.randint(1, 4096)
                h = pool.malloc(size)
                d = rng.randbytes(size)
                if rng.random() < 0.5:
                    pool.write(h, d)
                else:
                    with pool.map(h, "wo") as mv:
                        mv[:] = d
                mine[h] = d
            elif op < 0.55:
                h = rng.choice(list(mine))
                assert pool.read(h, len(mine[h])) == mine[h]
            elif op < 0.65:
                h = rng.choice(list(mine))
                with pool.map(h, "rw") as mv:
                    assert mv == mine[h]
                    mv[0] = step & 0xFF
                mine[h] = bytes([step & 0xFF]) + mine[h][1:]
            elif op < 0.85:
                h = rng.choice(list(mine))
                pool.free(h)
                del mine[h]
            else:
                h, d = rng.choice(shared_list)
                if rng.random() < 0.5:
                    assert pool.read(h, len(d)) == d
                else:
                    with pool.map(h, "ro") as mv:
                        assert mv == d
        results[tid] = mine

    def compactor():
        while not stop.is_set():
            pool.compact()
            pool.info()
            stop.wait(0.002)

    c = threading.Thread(target=compactor)
    c.start()
    try:
        run_threads([(worker, t) for t in range(4)])
    finally:
        stop.set()
        c.join(30)
    pool.check()
    everything = dict(shared)
    for mine in results.values():
        assert not set(mine) & set(everything), "a handle was handed out twice"
        everything.update(mine)
    info = pool.info()
    assert info["live_objects"] == len(everything)
    assert info["requested_bytes"] == sum(len(d) for d in everything.values())
    assert info["misuse_events"] == 0
    for h, d in everything.items():
        assert pool.read(h, len(d)) == d
    pool.compact()
    pool.check()
    for h, d in everything.items():
        assert pool.read(h, len(d)) == d
        pool.free(h)
    assert pool.total_pages == 0
    pool.check()


def test_threads_race_to_free(pool):
    # Threads map, read and try to free the same objects: each object is freed exactly
    # once; the others see BusyError (mapped or being read) or ValueError (already freed),
    # and every read that succeeds sees the object's bytes.
    objs = {}
    for i in range(400):
        h = pool.malloc(64 + i % 200)
        d = bytes([i & 0xFF]) * (64 + i % 200)
        pool.write(h, d)
        objs[h] = d
    handles = list(objs)
    frees = []
    lock = threading.Lock()

    def racer(tid):
        rng = random.Random(100 + tid)
        order = handles[:]
        rng.shuffle(order)
        for h in order:
            d = objs[h]
            for _ in range(3):
                action = rng.random()
                try:
                    if action < 0.4:
                        with pool.map(h, "ro") as mv:
                            assert mv == d
                    elif action < 0.7:
                        assert pool.read(h, len(d)) == d
                    else:
                        pool.free(h)
                        with lock:
                            frees.append(h)
                except zsmalloc.BusyError:
                    pass
                except ValueError as e:
                    assert "EINVAL" in str(e)
        # Whatever is left gets freed by someone.
        for h in order:
            try:
                pool.free(h)
                with lock:
                    frees.append(h)
            except (zsmalloc.BusyError, ValueError):
                pass

    run_threads([(racer, t) for t in range(4)])
    pool.check()
    # A free that raced with a pin may have been refused everywhere; free what is left.
    for h in handles:
        if h not in frees:
            pool.free(h)
            frees.append(h)
    assert sorted(frees) == sorted(handles), "every object freed exactly once"
    assert pool.info()["live_objects"] == 0
    assert pool.total_pages == 0
    pool.check()
