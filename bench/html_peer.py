#!/usr/bin/python3
"""The Python side of bench/html_bench.lua: parse + XPath with python3-lxml, one run.

    FORAGE_HTML_PAGES=DIR [FORAGE_HTML_ROUNDS=10] /usr/bin/python3 bench/html_peer.py parse_xpath

Reads DIR/001.html, DIR/002.html ... into memory (not timed), makes one untimed pass that
checksums what it extracted, then times ROUNDS rounds of: parse each page with its URL,
run the two XPaths, count the results. Prints one JSON object on stdout.
"""
import os
import sys
import time

from lxml import etree

import peer

URL_PREFIX = "https://ssr1.scrape.center/page/"
XPATH_HREF = '//a[@class="name"]/@href'
XPATH_DIRECTORS = '//div[@class="directors el-row"]//p/text()'


def load(directory):
    bodies, urls = [], []
    i = 1
    while True:
        try:
            with open(os.path.join(directory, "%03d.html" % i), "rb") as f:
                bodies.append(f.read())
        except FileNotFoundError:
            break
        urls.append("%s%03d" % (URL_PREFIX, i))
        i += 1
    if not bodies:
        raise SystemExit(f"no pages in {directory}")
    return bodies, urls


def bench_parse_xpath():
    directory = os.environ["FORAGE_HTML_PAGES"]
    rounds = int(os.environ.get("FORAGE_HTML_ROUNDS", "10"))
    bodies, urls = load(directory)
    pages = list(zip(bodies, urls))
    # As Scrapy/parsel do: lxml's HTMLParser (recover, no network), strings, not smart strings.
    parser = etree.HTMLParser()
    nbytes = 0
    for body, url in pages:   # untimed: warm-up and checksum
        tree = etree.fromstring(body, parser, base_url=url)
        for s in tree.xpath(XPATH_HREF, smart_strings=False):
            nbytes += len(s.encode())
        for s in tree.xpath(XPATH_DIRECTORS, smart_strings=False):
            nbytes += len(s.encode())
    hrefs = directors = 0
    t0 = time.perf_counter()
    for _ in range(rounds):
        for body, url in pages:
            tree = etree.fromstring(body, parser, base_url=url)
            hrefs += len(tree.xpath(XPATH_HREF, smart_strings=False))
            directors += len(tree.xpath(XPATH_DIRECTORS, smart_strings=False))
            del tree
    seconds = time.perf_counter() - t0
    n = len(pages) * rounds
    return {"seconds": seconds, "pages": n, "rate": n / seconds,
            "hrefs": hrefs // rounds, "directors": directors // rounds, "bytes": nbytes}


BENCHES = {
    "parse_xpath": bench_parse_xpath,
}


if __name__ == "__main__":
    sys.exit(peer.main(BENCHES, sys.argv))
