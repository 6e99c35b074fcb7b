-- forage demo: a real crawl of the bundled movie site (forage.testing) through 20 local
-- proxies of which several are bad, checked against the site's own answer.
local M = {
  summary = "Crawl a bundled local site through 20 local proxies, several of them bad.",
  description = "Starts the bundled movie site and 20 forward proxies on 127.0.0.1 (some dead, banning, "
    .. "flaky or slow), crawls list pages -> detail pages with 2 workers and one sticky proxy per slot, "
    .. "and shows the directors found, the proxy table and that every page arrived.",
}

-- The proxies: 13 good ones and 7 that break in each of the ways the crawl must survive.
M.PROXIES = {
  "good", "good", "good", "good", "good", "good", "good", "good", "good", "good", "good", "good", "good",
  "dead", "dead", "refuse_after:5", "ban_after:5:1", "flaky:0.5", "reset:0.5", "slow:300",
}

function M.configure(command)
  command:option("--pages", "List pages of the site (10 movies each; default 30)."):argname("N")
  command:option("--workers", "Worker processes (default 2)."):argname("N")
  command:flag("-q --quiet", "Print only the result lines.")
end

-- The spider, as a user writes it.
function M.spider(site, proxies, workers)
  return {
    name = "movies",
    start = site:start_urls(),
    proxies = proxies,
    workers = workers,
    concurrency = 20,
    retries = 3,
    timeout = 5,
    proxy = { cooldown = 0.2, max_cooldown = 1, retire_after = 2 },
    parse = function(page)
      page:follow(page:css("a.name::attr(href)"), "detail")
    end,
    detail = function(page)
      return {
        url = page.url,
        title = page:css("h2.m-b-sm::text")[1],
        directors = page:css("div.directors p.name::text"),
      }
    end,
  }
end

function M.run(parsed, cli)
  local testing = require "forage.testing"
  local crawl_cli = require "forage.cli.crawl"
  local pages = tonumber(parsed.pages or 30)
  local workers = tonumber(parsed.workers or 2)
  if not pages or pages < 1 or not workers or workers < 1 then
    return cli.fail(cli.USAGE, "--pages and --workers take a positive number")
  end
  local site <close> = testing.site { pages = math.tointeger(pages), per_page = 10, latency = 50 }
  local proxies <close> = testing.proxies(M.PROXIES)
  local quiet = parsed.quiet
  local out = io.stdout
  if not quiet then
    out:write(("forage demo: %d list pages and %d movies at %s, through %d local proxies:\n  %s\n\n"):format(
      pages, pages * 10, site.url, #M.PROXIES, table.concat(M.PROXIES, " ")))
  end
  local items = {}
  local spider = M.spider(site, proxies:urls(), math.tointeger(workers))
  local crawl = require "forage.crawl"
  local ok, stats = pcall(crawl.run, spider, { on_item = function(item) items[#items + 1] = item end,
    quiet = true })
  if not ok then return cli.fail(cli.FAILED, cli.clean_error(stats)) end
  table.sort(items, function(a, b) return a.url < b.url end)
  if not quiet then
    for i = 1, math.min(5, #items) do
      out:write(("  %-40s %s\n"):format(items[i].title or "?", table.concat(items[i].directors, ", ")))
    end
    out:write("  ...\n\n")
    crawl_cli.print_summary(stats, out)
  end
  -- the check: every movie once, with exactly the site's directors
  local answer, wrong, seen = site:answer(), 0, {}
  for _, item in ipairs(items) do
    local want = answer[item.url]
    if not want or seen[item.url] or table.concat(want, "|") ~= table.concat(item.directors, "|") then
      wrong = wrong + 1
    end
    seen[item.url] = true
  end
  local expected = 0
  for _ in pairs(answer) do expected = expected + 1 end
  local cooled, retired = 0, 0
  for _, p in ipairs(stats.proxies) do
    if (p.cooldowns or 0) > 0 then cooled = cooled + 1 end
    if p.state == "retired" then retired = retired + 1 end
  end
  out:write(("\n%d of %d movies, %d wrong or repeated; %d proxies cooled down at least once, %d retired; "
    .. "%d requests failed for good.\n"):format(#items, expected, wrong, cooled, retired, stats.failed))
  if #items == expected and wrong == 0 and stats.exit_code == 0 then
    out:write("Every page arrived, each director once.\n")
    return cli.OK
  end
  return cli.fail(cli.FAILED, "the crawl did not get the site's whole answer")
end

return M
