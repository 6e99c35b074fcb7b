#!/usr/bin/python3
"""The Python side of bench/shared_bench.lua: multiprocessing.Value, one measurement a run.

    /usr/bin/python3 bench/shared_peer.py value_add

Prints one JSON object on stdout. Each run is a fresh interpreter, as each forage trial is
a fresh lua5.4.
"""
import multiprocessing
import sys
import time

import peer

# Python's default on Linux up to 3.13, and forage's only way: compare fork with fork.
CTX = multiprocessing.get_context("fork")


def add_many(v, n):
    # The documented way to increment a shared Value from several processes: += alone
    # is a load and a store, and loses updates.
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def bench_value_add(procs=4, each=1000000):
    v = CTX.Value("i", 0)
    t0 = time.perf_counter()
    workers = [CTX.Process(target=add_many, args=(v, each)) for _ in range(procs)]
    for p in workers:
        p.start()
    for p in workers:
        p.join()
    seconds = time.perf_counter() - t0
    total = procs * each
    if v.value != total or any(p.exitcode != 0 for p in workers):
        raise SystemExit(f"value_add: got {v.value}, expected {total}")
    return {"seconds": seconds, "ops": total, "rate": total / seconds}


BENCHES = {
    "value_add": bench_value_add,
}


if __name__ == "__main__":
    sys.exit(peer.main(BENCHES, sys.argv))
