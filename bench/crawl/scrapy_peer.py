#!/usr/bin/python3
"""The Scrapy peer of the crawl benchmark: Debian's python3-scrapy, a spider class run by
CrawlerProcess, CONCURRENT_REQUESTS = SLOTS (and as many per domain: the site is one host),
each request's proxy set in meta["proxy"] round-robin over the proxies (Scrapy cannot keep a
proxy per slot), retries raised so that a connection tinyproxy closes never loses a page,
items written by Scrapy's own feed exporter (JSON Lines).

    /usr/bin/python3 bench/crawl/scrapy_peer.py START_FILE PROXIES_FILE SLOTS OUT_FILE

Prints one JSON line: pages, items, seconds (CrawlerProcess.crawl to the end), retries.
"""
import itertools
import json
import sys
import time

import scrapy
from scrapy import signals
from scrapy.crawler import CrawlerProcess


class Movies(scrapy.Spider):
    name = "movies"

    def __init__(self, start=(), proxies=(), **kw):
        super().__init__(**kw)
        self.start = start
        self.proxy = itertools.cycle(proxies).__next__

    def start_requests(self):
        for url in self.start:
            yield scrapy.Request(url, callback=self.parse, meta={"proxy": self.proxy()})

    def parse(self, response):
        for href in response.xpath('//a[@class="name"]/@href').getall():
            yield response.follow(href, callback=self.detail, meta={"proxy": self.proxy()})

    def detail(self, response):
        yield {"url": response.url,
               "directors": [s.strip() for s in response.css("div.directors p.name::text").getall()]}


def main():
    start_file, proxies_file, slots, out_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with open(start_file) as f:
        start = [line.strip() for line in f if line.strip()]
    with open(proxies_file) as f:
        proxies = [line.strip() for line in f if line.strip()]
    process = CrawlerProcess(settings={
        "LOG_LEVEL": "ERROR",
        "CONCURRENT_REQUESTS": slots,
        "CONCURRENT_REQUESTS_PER_DOMAIN": slots,
        "CONCURRENT_REQUESTS_PER_IP": 0,
        "DOWNLOAD_DELAY": 0,
        "ROBOTSTXT_OBEY": False,
        "RETRY_ENABLED": True,
        "RETRY_TIMES": 10,
        "TELNETCONSOLE_ENABLED": False,
        "REACTOR_THREADPOOL_MAXSIZE": 20,
        "FEEDS": {out_file: {"format": "jsonlines", "encoding": "utf8", "overwrite": True}},
    })
    crawler = process.create_crawler(Movies)
    t0 = time.time()
    process.crawl(crawler, start=start, proxies=proxies)
    process.start()
    seconds = time.time() - t0
    stats = crawler.stats.get_stats()
    print(json.dumps({"crawler": "scrapy", "pages": stats.get("response_received_count", 0),
                      "items": stats.get("item_scraped_count", 0), "seconds": seconds,
                      "retries": stats.get("retry/count", 0), "slots": slots}))


if __name__ == "__main__":
    main()
