-- The crawl benchmark's spider for forage, written as a user writes one (issue 8's example):
-- list pages -> detail pages -> directors. The bench runs it through bench/crawl/forage_run.lua,
-- which passes start, proxies, concurrency and workers as forage.crawl's overrides (as
-- `forage crawl spider.lua -s key=value` would); the values here are what a user would type.
return {
  name = "movies",
  start = "start.txt",    -- list pages, one URL a line
  proxies = "proxies.txt",
  concurrency = 20,
  workers = 2,
  retries = 3,
  timeout = 10,
  parse = function(page)
    for _, href in ipairs(page:xpath('//a[@class="name"]/@href')) do page:follow(href, "detail") end
  end,
  detail = function(page)
    return { url = page.url, directors = page:css("div.directors p.name::text") }
  end,
}
