#!/usr/bin/python3
"""The blog's approach (../shared/seed/multiprocessing-proxy-crawl.zh.txt), as its author wrote it,
on the bench's site: a multiprocessing.Pool whose initializer gives each worker one proxy from a
Manager queue (kept until it breaks), list pages submitted with apply_async whose callback
submits the detail pages, lxml XPath for the directors, error callbacks that resubmit a failed
page, and completion found by polling the private pool._cache every 0.1 s, as the blog does.

    /usr/bin/python3 bench/crawl/blog.py START_FILE PROXIES_FILE PROCESSES OUT_FILE

Differences from the blog, each needed to measure it fairly: one requests.Session per worker
(the blog calls requests.get, a new connection each time); a status other than 200 is an error
(resubmitted) rather than a page; no time.sleep(1.5) after each page and no print per page; a
proxy is taken back only when the queue has a spare one (as the blog's get_nowait does).
Prints one JSON line: pages, items, seconds (pool creation to the end), retries.
"""
import json
import multiprocessing
import sys
import time
from queue import Empty

import requests
from lxml import etree

ip = ""
session = None


def get_index(url, q):
    global ip
    if not ip:
        raise Exception(url)
    try:
        resp = session.get(url, proxies={"http": ip, "https": ip}, timeout=10)
        resp.raise_for_status()
    except Exception:
        try:
            ip = q.get_nowait()
        except Empty:
            pass
        raise Exception(url)
    doc = etree.HTML(resp.text)
    detail_urls = doc.xpath('//a[@class="name"]/@href')
    base = url[:url.index("/", 8)]
    return [base + u for u in detail_urls if not u.startswith("http")]


def get_detail(url, q):
    global ip
    if not ip:
        raise Exception(url)
    try:
        resp = session.get(url, proxies={"http": ip, "https": ip}, timeout=10)
        resp.raise_for_status()
    except Exception:
        try:
            ip = q.get_nowait()
        except Empty:
            pass
        raise Exception(url)
    doc = etree.HTML(resp.text)
    results = doc.xpath('//div[@class="directors el-row"]//p/text()')
    return url, [i.strip() for i in results]


def get_ip(q):
    global ip, session
    session = requests.Session()
    try:
        ip = q.get_nowait()
    except Empty:
        ip = ""


def main():
    start_file, proxies_file, processes, out_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with open(start_file) as f:
        start = [line.strip() for line in f if line.strip()]
    with open(proxies_file) as f:
        ips2 = [line.strip() for line in f if line.strip()]
    results, counts = [], {"pages": 0, "retries": 0}

    manage = multiprocessing.Manager()
    q = manage.Queue(len(ips2))
    for i in ips2:
        q.put(i)
    t = time.time()
    pool = multiprocessing.Pool(processes=processes, initializer=get_ip, initargs=(q,))

    def save_result(result):
        counts["pages"] += 1
        results.append(result)

    def index_callback(detail_urls):
        counts["pages"] += 1
        for url in detail_urls:
            pool.apply_async(get_detail, args=(url, q), callback=save_result, error_callback=detail_error_callback)

    def index_error_callback(e):
        counts["retries"] += 1
        pool.apply_async(get_index, (str(e), q), callback=index_callback, error_callback=index_error_callback)

    def detail_error_callback(e):
        counts["retries"] += 1
        pool.apply_async(get_detail, (str(e), q), callback=save_result, error_callback=detail_error_callback)

    for url in start:
        pool.apply_async(get_index, args=(url, q), callback=index_callback, error_callback=index_error_callback)
    while pool._cache:
        time.sleep(0.1)
    seconds = time.time() - t
    pool.close()
    pool.join()
    manage.shutdown()
    with open(out_file, "w") as f:
        for url, directors in results:
            f.write(json.dumps({"url": url, "directors": directors}, ensure_ascii=False) + "\n")
    print(json.dumps({"crawler": "blog", "pages": counts["pages"], "items": len(results), "seconds": seconds,
                      "retries": counts["retries"], "processes": processes}))


if __name__ == "__main__":
    main()
