-- forage.crawl against forage.testing's movie site and fault proxies: every run is checked
-- against the site's known answer (every director of every movie, once), not a count.
local forage = require "forage"
local testing = require "forage.testing"
local helpers = require "helpers"

local function spider_for(site, overrides)
  local spider = {
    name = "movies",
    start = site:start_urls(),
    workers = 2,
    concurrency = 8,
    timeout = 10,
    retries = 3,
    parse = function(page)
      page:follow(page:css("a.name::attr(href)"), "detail")
    end,
    detail = function(page)
      return { url = page.url, directors = page:css("div.directors p.name::text") }
    end,
  }
  for k, v in pairs(overrides or {}) do spider[k] = v end
  return spider
end

-- Runs the crawl collecting items; returns stats and the items.
local function crawl(spider, opts)
  local items = {}
  opts = opts or {}
  opts.on_item = function(item) items[#items + 1] = item end
  opts.quiet = true
  local stats = forage.crawl(spider, opts)
  return stats, items
end

-- Asserts that items are exactly the site's answer: each movie once, its directors in order.
local function assert_answer(site, items, stats)
  local answer = site:answer()
  local seen, expected = {}, 0
  for _ in pairs(answer) do expected = expected + 1 end
  for _, item in ipairs(items) do
    assert.is_nil(seen[item.url], "item twice: " .. item.url)
    seen[item.url] = true
    assert.same(answer[item.url], item.directors, item.url)
  end
  assert.equal(expected, #items, stats and ("items; failed " .. stats.failed) or "items")
end

local function proxy_sum(proxies, key)
  local n = 0
  for i = 1, #proxies do n = n + proxies[i]:counters()[key] end
  return n
end

describe("forage.crawl", function()
  it("crawls list -> detail direct, with the exact answer and exact completion", function()
    local site <close> = testing.site { pages = 5, per_page = 10 }
    local stats, items = crawl(spider_for(site))
    assert_answer(site, items, stats)
    assert.equal(0, stats.exit_code)
    assert.equal("done", stats.finished)
    assert.equal(55, stats.pages)
    assert.equal(50, stats.items)
    assert.equal(0, stats.failed)
    assert.equal(55, stats.by_status["200"])
    assert.equal(55, site:counters().requests)
    assert.is_true(stats.cpu_seconds > 0)
  end)

  it("goes through all-good proxies, each slot keeping its proxy", function()
    local site <close> = testing.site { pages = 4, per_page = 10 }
    local proxies <close> = testing.proxies { "good", "good", "good", "good" }
    local stats, items = crawl(spider_for(site, { proxies = proxies:urls(), concurrency = 4 }))
    assert_answer(site, items, stats)
    assert.equal(44, proxy_sum(proxies, "requests"))
    for i = 1, #proxies do
      assert.equal(stats.proxies[i].requests, proxies[i]:counters().requests)
      assert.equal(0, stats.proxies[i].failures)
      assert.is_true(proxies[i]:counters().peak_inflight <= 1, "one slot per proxy")
    end
  end)

  it("proxy.slots = 1 never lets two requests through one proxy at once", function()
    local site <close> = testing.site { pages = 3, per_page = 10, latency = 30 }
    local proxies <close> = testing.proxies { "good", "good", "good" }
    local stats, items = crawl(spider_for(site, { proxies = proxies:urls(), concurrency = 12 }))
    assert_answer(site, items, stats)
    for i = 1, #proxies do assert.equal(1, proxies[i]:counters().peak_inflight) end
  end)

  it("proxy.slots = N shares a proxy among N slots", function()
    local site <close> = testing.site { pages = 3, per_page = 10, latency = 50 }
    local proxies <close> = testing.proxies { "good" }
    local stats, items = crawl(spider_for(site, { proxies = proxies:urls(), concurrency = 6,
      proxy = { slots = 6 } }))
    assert_answer(site, items, stats)
    assert.is_true(proxies[1]:counters().peak_inflight > 1)
    assert.is_true(proxies[1]:counters().peak_inflight <= 6)
  end)

  -- reset and flaky at P = 1, so that the proxy fails every time whatever the scheduling
  for _, behaviour in ipairs { "dead", "refuse_after:5", "ban_after:4", "reset:1", "flaky:1",
    "auth:bob:wrong", "slow:100" } do
    it("survives a proxy that is " .. behaviour .. ", with the whole answer", function()
      local site <close> = testing.site { pages = 3, per_page = 10 }
      local proxies <close> = testing.proxies { "good", "good", behaviour }
      local urls = proxies:urls()
      if behaviour:match("^auth") then urls[3] = proxies[3].bare_url end   -- no credentials: 407
      local stats, items = crawl(spider_for(site, { proxies = urls, concurrency = 3,
        proxy = { cooldown = 0.05, max_cooldown = 0.2, retire_after = 3 } }))
      assert_answer(site, items, stats)
      assert.equal(0, stats.failed)
      local bad = stats.proxies[3]
      -- what the proxy did is what forage counted; how many requests reach it before the
      -- others finish the crawl depends on the schedule, so a threshold behaviour
      -- (ban_after, refuse_after) may not have struck: its counters say whether it did
      local c = proxies[3]:counters()
      assert.equal(c.banned, bad.bans, behaviour .. ": bans answered and counted")
      assert.is_true(c.refused + c.reset + c.dropped == 0 or bad.failures > 0, behaviour .. ": failures counted")
      if behaviour ~= "slow:100" and not behaviour:find("_after:", 1, true) then
        assert.is_true(bad.failures + bad.bans > 0 or bad.requests == 0, behaviour)
      end
    end)
  end

  it("mixes every bad behaviour and still gets every page", function()
    local site <close> = testing.site { pages = 10, per_page = 10 }
    local proxies <close> = testing.proxies { "good", "good", "good", "dead", "refuse_after:2", "ban_after:2:1",
      "reset:0.3", "flaky:0.3", "slow:50", "auth:a:b" }
    local stats, items = crawl(spider_for(site, { proxies = proxies:urls(), concurrency = 10,
      proxy = { cooldown = 0.05, max_cooldown = 0.5, retire_after = 3 } }))
    assert_answer(site, items, stats)
    assert.equal(0, stats.failed)
    assert.equal(0, stats.exit_code)
    -- the dead, refusing and banning proxies were cooled (and still every page arrived)
    for i = 4, 6 do assert.is_true(stats.proxies[i].cooldowns > 0, proxies[i].behaviour) end
    for i = 1, 3 do assert.equal(0, stats.proxies[i].cooldowns) end
  end)

  it("with fewer live proxies than slots, never sends a request without one and does not spin", function()
    local site <close> = testing.site { pages = 2, per_page = 10, latency = 100 }
    local proxies <close> = testing.proxies { "good", "dead", "dead" }
    local stats, items = crawl(spider_for(site, { proxies = proxies:urls(), concurrency = 10, workers = 2,
      proxy = { cooldown = 60, retire_after = 1 } }))
    assert_answer(site, items, stats)
    -- every request the site saw came through the one live proxy
    assert.equal(site:counters().requests, proxies[1]:counters().requests)
    assert.equal(1, proxies[1]:counters().peak_inflight)
    -- 22 requests of 100 ms one at a time: about 2.2 s of waiting slots; spinning would burn it all
    assert.is_true(stats.cpu_seconds < stats.elapsed * 0.5,
      ("CPU %.2f s in %.2f s"):format(stats.cpu_seconds, stats.elapsed))
  end)

  it("stops with exit code 3 naming each proxy and its last error when none is left", function()
    local site <close> = testing.site { pages = 2, per_page = 10 }
    local proxies <close> = testing.proxies { "dead", "dead" }
    local failed = os.tmpname() .. ".jsonl"
    local stats = crawl(spider_for(site, { proxies = proxies:urls(), concurrency = 2,
      proxy = { cooldown = 0.01, max_cooldown = 0.02, retire_after = 2 } }), { failed = failed })
    assert.equal(3, stats.exit_code)
    assert.equal("no_proxy", stats.finished)
    for i = 1, 2 do
      assert.equal("retired", stats.proxies[i].state)
      assert.matches(proxies[i].url:gsub("%p", "%%%0"), stats.message)
    end
    assert.matches("proxy: Failed to connect", stats.message)
    assert.is_nil(stats.message:find("('http", 1, true), "the last error without the page's URL")
    -- nothing lost: the start URLs not done are in the failed file
    local lines = 0
    for line in io.lines(failed) do
      lines = lines + 1
      assert.matches('"url":"' .. site.url:gsub("%p", "%%%0") .. '/page/%d"', line)
      assert.matches('"not done: no live proxy left"', line)
    end
    assert.equal(2, lines)
    assert.equal(0, site:counters().requests)
    os.remove(failed)
  end)

  it("re-runs the requests of a worker SIGKILLed mid-crawl, frees its proxies, and completes", function()
    local site <close> = testing.site { pages = 4, per_page = 10, latency = 20 }
    local proxies <close> = testing.proxies { "good", "good", "good", "good" }
    local killed = forage.value("int32", 0)
    local spider = spider_for(site, { proxies = proxies:urls(), concurrency = 4, workers = 2 })
    local detail = spider.detail
    spider.detail = function(page)
      -- the first worker to reach movie 7 dies there, holding requests in its other slot
      if page.url:match("/detail/7$") and killed:cas(0, 1) then
        os.execute("kill -9 " .. forage.getpid())
      end
      return detail(page)
    end
    local stats, items = crawl(spider)
    assert.equal(1, killed.value)
    assert.equal(1, stats.worker_deaths)
    assert_answer(site, items, stats)
    assert.equal(0, stats.failed)
  end)

  it("keeps `delay` between two requests through one proxy", function()
    local site <close> = testing.site { pages = 1, per_page = 4 }
    local proxies <close> = testing.proxies { "good" }
    local t0 = forage.now()
    local stats, items = crawl(spider_for(site, { proxies = proxies:urls(), concurrency = 2, workers = 1,
      delay = 0.3 }))
    assert_answer(site, items, stats)
    -- 5 requests through one proxy: at least 4 gaps of 0.3 s (a lower bound: load only adds)
    assert.is_true(forage.now() - t0 >= 1.2)
  end)

  it("keeps `delay` between two requests of a crawl without proxies", function()
    local site <close> = testing.site { pages = 1, per_page = 4 }
    local t0 = forage.now()
    local stats, items = crawl(spider_for(site, { concurrency = 4, workers = 2, delay = 0.3 }))
    assert_answer(site, items, stats)
    assert.is_true(forage.now() - t0 >= 1.2)   -- 5 requests, 4 gaps, across both workers
  end)

  it("honours Retry-After on a ban before the proxy takes load again", function()
    local site <close> = testing.site { pages = 1, per_page = 3 }
    local proxies <close> = testing.proxies { "ban_after:2:1" }
    local t0 = forage.now()
    local stats = crawl(spider_for(site, { proxies = proxies:urls(), concurrency = 1, workers = 1,
      proxy = { cooldown = 0.01, max_cooldown = 0.01, retire_after = 2 } }))
    -- the proxy bans after two requests with Retry-After: 1; it cools at least 1 s, then its
    -- probe is banned again and, two cooldowns in a row, it retires
    assert.is_true(stats.proxies[1].bans >= 1)
    assert.equal(3, stats.exit_code)
    assert.is_true(forage.now() - t0 >= 1.0)
  end)

  it("obeys robots.txt when asked, through the slot's proxy", function()
    local site <close> = testing.site { pages = 2, per_page = 10, robots = "User-agent: *\nDisallow: /detail/1\n" }
    local proxies <close> = testing.proxies { "good" }
    local stats, items = crawl(spider_for(site, { proxies = proxies:urls(), obey_robots = true, concurrency = 2 }))
    -- /detail/1 and /detail/10 .. /detail/19 are disallowed (a prefix rule)
    assert.equal(11, stats.robots_forbidden)
    assert.equal(9, #items)
    for _, item in ipairs(items) do assert.is_nil(item.url:match("/detail/1%d?$")) end
    assert.equal(1, site:counters().by_kind.robots)
  end)

  it("skips hrefs that are not URLs, counts them, and copes with a body that is not HTML", function()
    local site <close> = testing.site { pages = 1, per_page = 2 }
    local stats, items = crawl(spider_for(site, {
      parse = function(page)
        page:follow(page:xpath("//a/@href"), "any")
      end,
      any = function(page)   -- runs in a worker: what it sees comes back as an item
        if page.url:match("%.pdf$") then
          return { bytes = #page.body, xpath = #page:xpath("//a"), css = #page:css("a"), links = #page:links() }
        end
      end,
    }))
    assert.equal(2, stats.skipped_links, "javascript: and mailto:")
    assert.equal(1, stats.duplicates, "#top is the page itself")
    assert.equal(1, #items)
    assert.is_true(items[1].bytes > 1000)
    assert.same({ 0, 0, 0 }, { items[1].xpath, items[1].css, items[1].links })
    assert.equal(0, stats.failed)
  end)

  it("sends a callback that raises to the failed output with its traceback, and goes on", function()
    local site <close> = testing.site { pages = 2, per_page = 5 }
    local failed = os.tmpname() .. ".jsonl"
    local spider = spider_for(site)
    local detail = spider.detail
    spider.detail = function(page)
      if page.url:match("/detail/3$") then error("no directors here") end
      return detail(page)
    end
    local stats, items = crawl(spider, { failed = failed })
    assert.equal(9, #items)
    assert.equal(1, stats.failed)
    local line = helpers.read(failed)
    local record = require("cjson").decode(line)
    assert.matches("/detail/3$", record.url)
    assert.equal("detail", record.callback)
    assert.matches("no directors here", record.reasons[1])
    assert.matches("stack traceback", record.reasons[1])
    assert.is_nil(record.reasons[1]:find("forage/crawl/", 1, true), "only the spider's frames")
    os.remove(failed)
  end)

  it("stops at the first follow to a callback the spider lacks, naming it and the page", function()
    local site <close> = testing.site { pages = 1, per_page = 3 }
    local stats = crawl(spider_for(site, { parse = function(page) page:follow("/detail/1", "detial") end }))
    assert.equal(2, stats.exit_code)
    assert.equal("fatal", stats.finished)
    assert.matches("no callback 'detial'", stats.message)
    assert.matches("/page/1", stats.message)
  end)

  it("writes JSON Lines and CSV, a failed file for an item that cannot be written, and stats.json", function()
    local site <close> = testing.site { pages = 1, per_page = 4 }
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    local spider = spider_for(site)
    spider.detail = function(page)
      local item = { url = page.url, directors = page:css("div.directors p.name::text") }
      if page.url:match("/detail/2$") then item.bad = function() end end
      return item
    end
    local stats = forage.crawl(spider, { output = dir .. "/items.jsonl", stats = dir .. "/stats.json", quiet = true })
    assert.equal(3, stats.items)
    assert.equal(1, stats.failed)
    local cjson = require "cjson"
    local n = 0
    for line in io.lines(dir .. "/items.jsonl") do
      n = n + 1
      assert.is_table(cjson.decode(line).directors)
    end
    assert.equal(3, n)
    local failed = cjson.decode(helpers.read(dir .. "/items.failed.jsonl"))
    assert.matches("/detail/2$", failed.url)
    assert.matches("cannot write the item", failed.reasons[1])
    local st = cjson.decode(helpers.read(dir .. "/stats.json"))
    assert.equal(5, st.pages)
    forage.crawl(spider_for(site), { output = dir .. "/items.csv", quiet = true })
    local csv = helpers.read(dir .. "/items.csv")
    assert.matches("^directors,url\r?\n", csv)
    local rows = 0
    for _ in csv:gmatch("\n") do rows = rows + 1 end
    assert.equal(5, rows)
    os.execute("rm -rf " .. dir)
  end)

  it("runs pipelines in order in the parent; one returning nil drops the item", function()
    local site <close> = testing.site { pages = 1, per_page = 6 }
    local parent = forage.getpid()
    local stats, items = crawl(spider_for(site, { pipelines = {
      function(item) item.n = #item.directors return item end,
      function(item)
        assert(forage.getpid() == parent)
        if item.url:match("/detail/[12]$") then return nil end
        return item
      end,
    } }))
    assert.equal(4, #items)
    assert.equal(2, stats.items_dropped)
    for _, item in ipairs(items) do assert.equal(#item.directors, item.n) end
  end)

  it("dedupes URLs by fingerprint, unless dont_filter", function()
    local site <close> = testing.site { pages = 1, per_page = 3 }
    local stats, items = crawl(spider_for(site, {
      parse = function(page)
        page:follow(page:css("a.name::attr(href)"), "detail")
        page:follow(page:css("a.name::attr(href)"), "detail")                     -- the same again
        page:follow("/detail/1#again", "detail")                                   -- same canonical URL
        page:follow("/detail/1", "detail", { dont_filter = true, meta = { again = true } })
      end,
    }))
    assert.equal(4, #items)
    assert.equal(4, stats.duplicates)
  end)

  it("stops at max_pages and max_items", function()
    local site <close> = testing.site { pages = 5, per_page = 10 }
    local stats = crawl(spider_for(site, { max_pages = 12, concurrency = 1, workers = 1 }))
    assert.equal(12, stats.pages)
    assert.equal("max_pages", stats.finished)
    stats = crawl(spider_for(site, { max_items = 7 }))
    assert.equal(7, stats.items)
  end)

  it("serves a second run from its cache, and refetches with cache_refresh", function()
    local site <close> = testing.site { pages = 1, per_page = 5 }
    local dir = os.tmpname()
    os.remove(dir)
    local stats, items = crawl(spider_for(site, { cache = dir }))
    assert_answer(site, items, stats)
    local before = site:counters().requests
    stats, items = crawl(spider_for(site, { cache = dir }))
    assert_answer(site, items, stats)
    assert.equal(before, site:counters().requests)
    assert.equal(6, stats.cache_hits)
    stats = crawl(spider_for(site, { cache = dir, cache_refresh = true }))
    assert.equal(before + 6, site:counters().requests)
    assert.equal(0, stats.cache_hits)
    os.execute("rm -rf " .. dir)
  end)

  it("carries meta and depth to the followed page, and honours depth_limit and allowed_domains", function()
    local site <close> = testing.site { pages = 4, per_page = 2 }
    local stats, items = crawl(spider_for(site, {
      start = { site.url .. "/page/1" },
      depth_limit = 2,
      parse = function(page)
        page:follow(page:css("a.next::attr(href)"), "parse", { meta = { from = page.url, n = page.depth } })
        page:follow(page:css("a.name::attr(href)"), "detail", { meta = { list = page.url } })
      end,
      detail = function(page)
        return { url = page.url, list = page.meta.list, depth = page.depth }
      end,
    }))
    -- page 1 (depth 0) -> page 2 (1) -> page 3 (2); page 3's follows (depth 3) are dropped
    assert.equal(4, #items)
    assert.equal(3, stats.depth_dropped)
    for _, item in ipairs(items) do
      assert.matches("/page/[12]$", item.list)
      assert.is_true(item.depth == 1 or item.depth == 2)
    end
    stats = crawl(spider_for(site, { start = { site.url .. "/page/1" }, allowed_domains = { "localhost" } }))
    assert.equal(2, stats.offsite)
    assert.equal(1, stats.pages)
  end)

  it("takes start as a function returning an iterator, and as a file of URLs", function()
    local site <close> = testing.site { pages = 3, per_page = 2 }
    local stats = crawl(spider_for(site, { start = function()
      return ipairs(site:start_urls())     -- yields indexes first: refused, naming what it gave
    end }))
    assert.equal(2, stats.exit_code)
    assert.matches("'start' gave 1, not a URL or a request table", stats.message)
    local items
    stats, items = crawl(spider_for(site, { start = function()
      local urls, i = site:start_urls(), 0
      return function() i = i + 1 return urls[i] end
    end }))
    assert_answer(site, items, stats)
    local path = os.tmpname()
    helpers.write(path, "# the list pages\n" .. table.concat(site:start_urls(), "\n") .. "\n\n")
    stats, items = crawl(spider_for(site, { start = path }))
    assert_answer(site, items, stats)
    os.remove(path)
  end)

  it("keeps at most per_host requests in flight to one host", function()
    local site <close> = testing.site { pages = 2, per_page = 10, latency = 30 }
    local proxies <close> = testing.proxies { "good" }
    local stats, items = crawl(spider_for(site, { proxies = proxies:urls(), concurrency = 8,
      proxy = { slots = 8 }, per_host = 2 }))
    assert_answer(site, items, stats)
    assert.equal(2, proxies[1]:counters().peak_inflight)
  end)

  it("keeps a cookie jar per slot, so that a proxy keeps its session", function()
    local site <close> = testing.site { pages = 1, per_page = 1 }
    local proxies <close> = testing.proxies { "good", "good" }
    local stats, items = crawl({
      start = { site.url .. "/cookie/set?session=s1" }, proxies = proxies:urls(), concurrency = 1, workers = 1,
      parse = function(page) page:follow("/cookie/show", "show") end,
      show = function(page) return { cookie = page:css("#cookie::text")[1] or "" } end,
    })
    assert.equal(0, stats.failed)
    assert.equal("session=s1", items[1].cookie)
    local _
    _, items = crawl({
      start = { site.url .. "/cookie/show" }, cookies = { lang = "en" }, concurrency = 1, workers = 1,
      parse = function(page) return { cookie = page:css("#cookie::text")[1] or "" } end,
    })
    assert.equal("lang=en", items[1].cookie)
    _, items = crawl({
      start = { site.url .. "/cookie/set?session=s1" }, cookies = false, concurrency = 1, workers = 1,
      parse = function(page) page:follow("/cookie/show", "show") end,
      show = function(page) return { cookie = page:css("#cookie::text")[1] or "" } end,
    })
    assert.equal("", items[1].cookie)
  end)

  it("starts a new session when a slot takes another proxy", function()
    local site <close> = testing.site { pages = 1, per_page = 1 }
    -- the one slot leases the first proxy (ties go to the lowest index), which serves one
    -- request and then refuses: the follow moves to the second proxy, without the cookie
    local proxies <close> = testing.proxies { "refuse_after:1", "good" }
    local stats, items = crawl({
      start = { site.url .. "/cookie/set?session=s1" }, proxies = proxies:urls(), concurrency = 1, workers = 1,
      proxy = { max_failures = 1 },
      parse = function(page) page:follow("/cookie/show", "show") end,
      show = function(page) return { cookie = page:css("#cookie::text")[1] or "", proxy = page.proxy } end,
    })
    assert.equal(0, stats.failed)
    assert.equal(1, proxies[1]:counters().requests - proxies[1]:counters().refused)
    assert.equal(proxies:urls()[2], items[1].proxy)
    assert.equal("", items[1].cookie)
  end)

  it("retries a 5xx within its budget and reports every reason when it runs out", function()
    local site <close> = testing.site { pages = 1, per_page = 1 }
    local stats = crawl({ start = { site.url .. "/status/503" }, retries = 2, workers = 1, concurrency = 1,
      parse = function() end })
    assert.equal(1, stats.failed)
    assert.equal(2, stats.retries)
    local f = stats.failures[1]
    assert.equal(3, site:counters().by_kind.other)
    assert.same({ "HTTP 503", "HTTP 503", "HTTP 503", "gave up after 2 retries" }, f.reasons)
    assert.equal(3, f.attempts)   -- three tries, each failed
  end)
end)

describe("forage.crawl's bad input", function()
  local function fails(pattern, spider)
    local ok, err = pcall(forage.crawl, spider, { quiet = true })
    assert.is_false(ok)
    assert.matches(pattern, err)
  end

  it("names an unknown setting, a bad value, a bad start, a bad proxy (password masked)", function()
    local base = { start = { "http://127.0.0.1:9/" }, parse = function() end }
    local function with(k, v)
      local t = {}
      for a, b in pairs(base) do t[a] = b end
      t[k] = v
      return t
    end
    fails("unknown setting 'concurrancy'", with("concurrancy", 5))
    fails("setting 'concurrency' must be an integer from 1 to 100000, got 0", with("concurrency", 0))
    fails("setting 'start' must be a list of URLs, the name of a file of URLs, or a function", with("start", 42))
    fails("cannot read the start file", with("start", "/nonexistent/urls.txt"))
    fails("malformed proxy URL 'http://bob:%*%*%*@'", with("proxies", { "http://bob:secret@" }))
    fails("unknown scheme 'ftp'", with("proxies", { "ftp://127.0.0.1:21" }))
    fails("unknown setting 'proxy.slot'", with("proxy", { slot = 2 }))
    fails("has no 'parse' function", { start = { "http://127.0.0.1:9/" } })
    local ok, err = pcall(forage.crawl, with("proxies", { "http://bob:secret@127.0.0.1" }))
    assert.is_false(ok)
    assert.is_nil(err:find("secret", 1, true))
  end)

  it("is done at once with zero pages for an empty start list", function()
    local stats = forage.crawl({ start = {}, parse = function() end }, { quiet = true })
    assert.equal(0, stats.exit_code)
    assert.equal(0, stats.pages)
  end)
end)
