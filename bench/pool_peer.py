#!/usr/bin/python3
"""The Python side of bench/pool_bench.lua: multiprocessing.Pool, one measurement a run.

    /usr/bin/python3 bench/pool_peer.py imap_unordered|map|start_stop|pss

Prints one JSON object on stdout. Each run is a fresh interpreter, as each forage trial is
a fresh lua5.4, so neither side carries the heap of an earlier measurement into its forks.
"""
import multiprocessing
import sys
import time

import peer

# Python's default on Linux up to 3.13, and forage's only way: compare fork with fork.
CTX = multiprocessing.get_context("fork")


def square(x):
    return x * x


def warm_up(pool, n):
    """A trivial map so every worker has run a task before the clock starts."""
    pool.map(square, range(n), chunksize=1)


def bench_imap_unordered(n=100000, chunk=1):
    pool = CTX.Pool(2)
    warm_up(pool, 100)
    count = total = 0
    t0 = time.perf_counter()
    for r in pool.imap_unordered(square, range(n), chunksize=chunk):
        count += 1
        total += r
    seconds = time.perf_counter() - t0
    pool.close()
    pool.join()
    expect = sum(x * x for x in range(n))
    if count != n or total != expect:
        raise SystemExit(f"imap_unordered: got {count} results summing to {total}, expected {n} / {expect}")
    return {"seconds": seconds, "items": n, "rate": n / seconds}


def bench_map(n=1000000):
    pool = CTX.Pool(2)
    warm_up(pool, 100)
    t0 = time.perf_counter()
    results = pool.map(square, range(n))   # default chunking: about four chunks a worker
    seconds = time.perf_counter() - t0
    pool.close()
    pool.join()
    if len(results) != n or results[-1] != (n - 1) ** 2:
        raise SystemExit(f"map: got {len(results)} results, expected {n}")
    return {"seconds": seconds, "items": n, "rate": n / seconds}


def bench_start_stop(workers=100):
    # Pool() returns once the workers are forked, not once they are ready; close + join
    # then waits for all of them to exit.
    t0 = time.perf_counter()
    pool = CTX.Pool(workers)
    t1 = time.perf_counter()
    pool.close()
    pool.join()
    t2 = time.perf_counter()
    return {"seconds": t2 - t0, "start": t1 - t0, "stop": t2 - t1, "workers": workers}


def pss_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise SystemExit(f"no Pss line for pid {pid}")


def bench_pss(workers=4, settle=0.3):
    pool = CTX.Pool(workers)
    warm_up(pool, workers * 4)
    time.sleep(settle)
    pids = [p.pid for p in pool._pool]
    kb = [pss_kb(pid) for pid in pids]
    pool.close()
    pool.join()
    return {"pss_kb": sum(kb) / len(kb), "pss_each": kb, "pids": pids}


BENCHES = {
    "imap_unordered": bench_imap_unordered,
    "map": bench_map,
    "start_stop": bench_start_stop,
    "pss": bench_pss,
}


if __name__ == "__main__":
    sys.exit(peer.main(BENCHES, sys.argv))
