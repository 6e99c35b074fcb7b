#!/usr/bin/python3
"""The Python side of bench/queue_bench.lua: multiprocessing.Queue, one measurement a run.

    /usr/bin/python3 bench/queue_peer.py small|big

Prints one JSON object on stdout. Each run is a fresh interpreter, as each forage trial is
a fresh lua5.4. Python's put() hands the message to a feeder thread and returns; as on the
forage side, the clock runs from the first put until the consumer has the last message.
"""
import multiprocessing
import sys
import time

import peer

# Python's default on Linux up to 3.13, and forage's only way: compare fork with fork.
CTX = multiprocessing.get_context("fork")

SMALL_ITEMS = 1000000
BIG_ITEMS = 100000
BIG_BYTES = 10 * 1024


def consume_small(q, result, n):
    acc = 0
    for _ in range(n):
        acc += q.get()[0]
    result.put(acc)


def consume_big(q, result, n):
    acc = 0
    for _ in range(n):
        acc += len(q.get())
    result.put(acc)


def producer_consumer(n, make, consume):
    q = CTX.Queue()
    result = CTX.Queue()
    consumer = CTX.Process(target=consume, args=(q, result, n))
    consumer.start()
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        q.put(make(i))
    acc = result.get(timeout=60)
    seconds = time.perf_counter() - t0
    consumer.join(10)
    if consumer.exitcode != 0:
        raise SystemExit(f"the consumer failed: exit {consumer.exitcode}")
    return seconds, acc


def bench_small(n=SMALL_ITEMS):
    seconds, total = producer_consumer(n, lambda i: (i, i + 1, "x"), consume_small)
    if total != n * (n + 1) // 2:
        raise SystemExit(f"small: the consumer's sum is {total}")
    return {"seconds": seconds, "items": n, "rate": n / seconds}


def bench_big(n=BIG_ITEMS):
    s = "x" * BIG_BYTES
    seconds, total = producer_consumer(n, lambda i: s, consume_big)
    if total != n * BIG_BYTES:
        raise SystemExit(f"big: the consumer got {total} bytes")
    return {"seconds": seconds, "items": n, "rate": n / seconds, "mb_per_s": n * BIG_BYTES / seconds / 1e6}


BENCHES = {
    "small": bench_small,
    "big": bench_big,
}


if __name__ == "__main__":
    sys.exit(peer.main(BENCHES, sys.argv))
