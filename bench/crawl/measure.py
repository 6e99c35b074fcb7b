#!/usr/bin/python3
"""Runs one crawler and measures it: the crawl benchmark's stopwatch (bench/crawl_bench.lua).

    /usr/bin/python3 bench/crawl/measure.py [--pss] [--timeout SECONDS] -- ARGV...

Starts ARGV as a child in a process group of its own, passes its output through, and when
it ends prints one line `MEASURE {json}`: wall seconds, user and sys CPU seconds of the child
and of every descendant it waited for (os.wait4's rusage: multiprocessing's workers and
manager, forage's workers), its exit status, and with --pss the peak of the summed Pss of
the child's whole process tree, sampled from /proc/PID/smaps_rollup every 50 ms. A child
still running at the timeout is killed with its group, and the line says so.
"""
import json
import os
import signal
import sys
import time


def ppids():
    """{pid: ppid} of every process now."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command may hold spaces and parentheses: the fields after the last ')'
        fields = stat[stat.rfind(b")") + 2:].split()
        out[int(name)] = int(fields[1])
    return out


def tree(root):
    """root and all its descendants."""
    parent = ppids()
    children = {}
    for pid, pp in parent.items():
        children.setdefault(pp, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    args = sys.argv[1:]
    want_pss, timeout = False, 600.0
    while args and args[0] != "--":
        if args[0] == "--pss":
            want_pss = True
            args = args[1:]
        elif args[0] == "--timeout":
            timeout = float(args[1])
            args = args[2:]
        else:
            sys.exit(f"measure.py: unknown argument {args[0]!r}")
    argv = args[1:]
    if not argv:
        sys.exit("usage: measure.py [--pss] [--timeout S] -- ARGV...")
    sys.stdout.flush()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    try:
        os.setpgid(pid, pid)  # here too: a timeout may come before the child has run at all
    except OSError:
        pass  # the child has exec'd (and set it) already
    peak, samples, timed_out = 0, 0, False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done == pid:
            break
        if want_pss:
            total = sum(pss_kb(p) for p in tree(pid))
            samples += 1
            peak = max(peak, total)
        if time.monotonic() - t0 > timeout and not timed_out:
            timed_out = True
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    wall = time.monotonic() - t0
    result = {
        "wall": wall,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "cpu": usage.ru_utime + usage.ru_stime,
        "maxrss_kb": usage.ru_maxrss,
        "exit": os.waitstatus_to_exitcode(status),
        "timed_out": timed_out,
    }
    if want_pss:
        result["peak_pss_kb"] = peak
        result["pss_samples"] = samples
    print("MEASURE " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
