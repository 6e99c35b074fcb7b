#!/usr/bin/python3
"""The Python side of bench/manager_bench.lua: multiprocessing managers, one measurement a run.

    /usr/bin/python3 bench/manager_peer.py dict_roundtrip|queue_remote [N]

Prints one JSON object on stdout. Each run is a fresh interpreter, as each forage trial is
a fresh lua5.4. N (optional) replaces the measurement's size: the spec runs both with a
tiny one.
"""
import multiprocessing
import queue
import sys
import time
from multiprocessing.managers import BaseManager

import peer

# Python's default on Linux up to 3.13, and forage's only way: compare fork with fork.
CTX = multiprocessing.get_context("fork")

# The sizes of bench/manager_bench.lua, which passes them as N: about 1-2 s a run here on
# the 2-core bench machine.
DICT_ITERATIONS = 12000
QUEUE_MESSAGES = 15000
AUTHKEY = b"abracadabra"


def bench_dict_roundtrip(n=DICT_ITERATIONS):
    with CTX.Manager() as m:
        d = m.dict()
        wrong = 0
        t0 = time.perf_counter()
        for i in range(n):
            d[i % 100] = i
            x = d[i % 100]
            if x != i:
                wrong += 1
        seconds = time.perf_counter() - t0
    if wrong:
        raise SystemExit(f"dict_roundtrip: {wrong} reads of {n} did not return what was written")
    round_trips = 2 * n
    return {"seconds": seconds, "n": n, "round_trips": round_trips, "reads_checked": n,
            "rate": round_trips / seconds}


class QueueServer(BaseManager):
    pass


class QueueClient(BaseManager):
    pass


QueueClient.register("get_queue")


def connect(address):
    client = QueueClient(address=address, authkey=AUTHKEY)
    client.connect()
    return client.get_queue()


def produce(address, ready, n):
    q = connect(address)
    ready.wait()
    for i in range(n):
        q.put("msg-%d" % i)


def consume(address, ready, result, n):
    q = connect(address)
    ready.wait()
    in_order = 0
    for i in range(n):
        if q.get() == "msg-%d" % i:
            in_order += 1
    result.put((n, in_order))


def bench_queue_remote(n=QUEUE_MESSAGES):
    shared = queue.Queue()  # made here, before the fork: the server process's own
    QueueServer.register("get_queue", callable=lambda: shared)
    server = QueueServer(address=("127.0.0.1", 0), authkey=AUTHKEY, ctx=CTX)
    server.start()
    try:
        # The clock starts when both clients have connected and hold their proxy.
        ready = CTX.Barrier(3)
        result = CTX.Queue()
        producer = CTX.Process(target=produce, args=(server.address, ready, n))
        consumer = CTX.Process(target=consume, args=(server.address, ready, result, n))
        producer.start()
        consumer.start()
        ready.wait(timeout=30)
        t0 = time.perf_counter()
        received, in_order = result.get(timeout=60)
        seconds = time.perf_counter() - t0
        producer.join(10)
        consumer.join(10)
    finally:
        server.shutdown()
    if producer.exitcode != 0 or consumer.exitcode != 0:
        raise SystemExit(f"queue_remote: producer exit {producer.exitcode}, consumer exit {consumer.exitcode}")
    if received != n or in_order != n:
        raise SystemExit(f"queue_remote: {received} messages received, {in_order} of {n} in order")
    return {"seconds": seconds, "n": n, "received": received, "in_order": in_order,
            "rate": n / seconds}


BENCHES = {
    "dict_roundtrip": bench_dict_roundtrip,
    "queue_remote": bench_queue_remote,
}


if __name__ == "__main__":
    argv = sys.argv
    if len(argv) == 3 and argv[1] in BENCHES and argv[2].isdigit():
        size, bench = int(argv[2]), BENCHES[argv[1]]
        BENCHES[argv[1]] = lambda: bench(size)
        argv = argv[:2]
    sys.exit(peer.main(BENCHES, argv))
