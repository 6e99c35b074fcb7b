-- Regressions found by attacking the crawl (each failed before its fix): deadlock on large
-- messages, limits with a long start list, unopenable outputs, deaths charged to bystanders,
-- bad follow options, password masking.
local forage = require "forage"
local testing = require "forage.testing"

local function crawl(spider, opts)
  local items = {}
  opts = opts or {}
  opts.on_item = function(item) items[#items + 1] = item end
  opts.quiet = true
  return forage.crawl(spider, opts), items
end

describe("forage.crawl, attacked", function()
  it("does not deadlock when requests and results are larger than the pipes' buffers", function()
    local site <close> = testing.site { pages = 3, per_page = 10 }
    local blob = ("m"):rep(300000)              -- each follow carries 300 KB of meta, both ways
    local stats, items = crawl {
      start = site:start_urls(), workers = 2, concurrency = 8,
      parse = function(page)
        page:follow(page:css("a.name::attr(href)"), "detail", { meta = { record = blob } })
      end,
      detail = function(page) return { url = page.url, size = #page.meta.record } end,
    }
    assert.equal(0, stats.exit_code)
    assert.equal(30, #items)
    for _, item in ipairs(items) do assert.equal(300000, item.size) end
  end)

  it("ends at max_pages and max_items with an endless start iterator", function()
    local site <close> = testing.site { pages = 1, per_page = 1 }
    local function endless()
      local i = 0
      return function() i = i + 1 return site.url .. "/detail/1?n=" .. i end
    end
    local stats = crawl { start = endless, max_pages = 5, workers = 1, concurrency = 2, parse = function() end }
    assert.equal(5, stats.pages)
    assert.equal("max_pages", stats.finished)
    stats = crawl { start = endless, max_items = 3, workers = 1, concurrency = 1,
      parse = function(page) return { url = page.url } end }
    assert.equal(3, stats.items)
    assert.equal("max_items", stats.finished)
  end)

  it("refuses an output it cannot open before any request, and keeps failures it cannot write", function()
    local site <close> = testing.site { pages = 1, per_page = 1 }
    local spider = { start = site:start_urls(), parse = function() end }
    local ok, err = pcall(forage.crawl, spider, { output = "/nonexistent/dir/items.jsonl", quiet = true })
    assert.is_false(ok)
    assert.equal(require("forage.crawl").BadInput, getmetatable(err))
    assert.matches("output: .*nonexistent", tostring(err))
    assert.equal(0, site:counters().requests)
    local stats = crawl({ start = { site.url .. "/missing" }, parse = function() end },
      { failed = "/nonexistent/dir/failed.jsonl", log_level = "error" })
    assert.equal(1, stats.failed)
    assert.equal(1, #stats.failures)
    assert.equal("HTTP 404", stats.failures[1].reasons[1])
  end)

  it("charges a worker's death to the request whose callback killed it, not to its bystanders", function()
    local site <close> = testing.site { pages = 5, per_page = 2 }
    local stats, items = crawl {
      start = site:start_urls(), workers = 1, concurrency = 4,
      parse = function(page)
        if page.url:match("/page/2$") then os.exit(3) end
        page:follow(page:css("a.name::attr(href)"), "detail")
      end,
      detail = function(page) return { url = page.url } end,
    }
    assert.equal(3, stats.worker_deaths)
    assert.equal(1, stats.failed)
    local f = stats.failures[1]
    assert.matches("/page/2$", f.url)
    assert.equal("its worker died in its callback", f.reasons[1])
    assert.equal(8, #items)
  end)

  it("fails a page whose follow has options no request could carry, and the worker lives", function()
    local site <close> = testing.site { pages = 1, per_page = 1 }
    for _, case in ipairs {
      { { headers = { ["X-A"] = "1\r\nX-Injected: 1" } }, "option 'headers' must be values without line breaks" },
      { { method = "GE T" }, "option 'method' must be an HTTP method token, got 'GE T'" },
      { { body = 123 }, "option 'body' must be a string, got 123" },
      { { priority = "high" }, "option 'priority' must be an integer, got 'high'" },
    } do
      local stats = crawl { start = site:start_urls(), workers = 1, concurrency = 1,
        parse = function(page) page:follow("/detail/1", "parse", case[1]) end }
      assert.equal(0, stats.worker_deaths)
      assert.equal(1, stats.failed)
      assert.matches(case[2], stats.failures[1].reasons[1], 1, true)
    end
  end)

  it("masks proxy credentials in every form", function()
    local mask = require("forage.crawl.spider").mask
    assert.equal("http://alice:***@127.0.0.1:8081", mask("http://alice:se/cret@127.0.0.1:8081"))
    assert.equal("alice:***@127.0.0.1:8082", mask("alice:topsecret@127.0.0.1:8082"))
    assert.equal("http://***@127.0.0.1:1", mask("http://APIKEY@127.0.0.1:1"))
    assert.equal("socks5h://u:***@h:2", mask("socks5h://u:p@ss@h:2"))
    assert.equal("http://127.0.0.1:3128", mask("http://127.0.0.1:3128"))
    local ok, err = pcall(forage.crawl, { start = {}, parse = function() end,
      proxies = { "http://alice:se/cret@" } }, { quiet = true })
    assert.is_false(ok)
    assert.is_nil(err:find("cret", 1, true))
  end)
end)
