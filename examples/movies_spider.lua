-- A spider, as `forage crawl` takes it: list pages -> detail pages -> directors, through
-- sticky proxies. It crawls forage.testing's copy of the blog's movie site, started here on
-- 127.0.0.1 with four local proxies (one of them dead), so it runs anywhere:
--   forage crawl examples/movies_spider.lua -o movies.jsonl
-- For a real site, put its URLs in `start` and a file of your proxies in `proxies`.
local testing = require "forage.testing"

local site = testing.site { pages = 5, per_page = 10, latency = 10 }
local proxies = testing.proxies { "good", "good", "good", "dead" }

return {
  name = "movies",
  start = site:start_urls(),          -- a list, a file of URLs (one a line), or a function returning an iterator
  proxies = proxies:urls(),           -- a list or a file; scheme://[user:pass@]host:port
  concurrency = 4,                    -- requests in flight in total: one slot each, one proxy per slot
  workers = 2,                        -- processes
  retries = 3, timeout = 10, delay = 0,
  proxy = { cooldown = 1, retire_after = 2 },
  parse = function(page)              -- the callback of the start URLs; runs in a worker
    page:follow(page:xpath('//a[@class="name"]/@href'), "detail")
  end,
  detail = function(page)
    return { url = page.url, directors = page:css("div.directors p.name::text") }
  end,
}
