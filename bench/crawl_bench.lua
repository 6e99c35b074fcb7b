-- The crawl section of `make bench` (issue 8): forage's crawl engine against the blog's
-- approach (multiprocessing.Pool + requests + lxml), Scrapy and a Go crawler built as Colly is,
-- on the same site served by nginx, through the same real tinyproxy instances, in one run.
--
--   (i)   20 proxies, no added latency, 500 list + 5,000 detail pages of about 16 KB:
--         pages/s and CPU per page against every peer and against the C floor (libxml2's parse
--         and query of the same pages, bench/html_floor.c); and forage with its crawl state
--         (issue 9: `--state DIR --fresh`, a new directory each run) against forage without,
--         run one after the other in each round (target: on keeps 90% of off's pages/s)
--   (ii)  50 ms added to every response, 100 proxies, 100 + 1,000 pages: pages/s against the
--         ceiling (the lower of slots/latency and wrk through the same proxies), and the peak
--         PSS of all crawler processes against the blog's 100 processes
--   (iii) 500 ms per response, 1,000 slots (10 proxies x 100 slots): pages/s against the same
--         kind of ceiling, on 500 + 5,000 pages (see ROWS.iii for why not 100 + 1,000)
--
-- Every crawler runs as a child of bench/crawl/measure.py (wall, CPU of its whole process
-- tree, peak PSS), writes its items as JSON Lines, and is checked against the site's known
-- answer (every director of every movie, once): a wrong answer is reported as wrong, not timed.
-- The pieces are in bench/crawl/: site.lua (the site and its answer), infra.lua (nginx,
-- tinyproxy, wrk), measure.py, blog.py, scrapy_peer.py, colly.go, spider.lua + forage_run.lua.
--
-- Environment, for development only: CRAWL_ROWS=i,ii (rows to run, default all),
-- CRAWL_PEERS=forage,forage_state,go (crawlers to run, default all), CRAWL_ROUNDS (runs of each crawler,
-- best kept, default 1), CRAWL_KEEP=1 (keep the temporary directory under build/),
-- CRAWL_NGINX_WORKERS (default 1).

local ROWS = {
  -- fewer: list pages for a slow peer, to keep the section within ~6 minutes on 2 cores;
  -- Scrapy is CPU-bound at these rates (its CPU seconds are most of its wall seconds), so its
  -- pages/s on 2,000 pages is what it gets on 5,500.
  { id = "i", lists = 500, latency = 0, proxies = 20, per_proxy = 1, blog_processes = 20,
    crawlers = { "forage", "forage_state", "blog", "scrapy", "go" }, fewer = { scrapy = 200 }, floor = true,
    timeout = 150 },
  { id = "ii", lists = 100, latency = 0.05, proxies = 100, per_proxy = 1, blog_processes = 100,
    crawlers = { "forage", "blog", "scrapy", "go" }, pss = true, ceiling = true, timeout = 90 },
  -- 1,000 slots on 100 + 1,000 pages cannot get near the ceiling whoever crawls: the 100 list
  -- pages take one 500 ms round with 900 slots idle, the 1,000 details one more, so 1,100 pages
  -- in 1 s is 55% of 2,000/s at best. With 500 + 5,000 the list round is one of six.
  { id = "iii", lists = 500, latency = 0.5, proxies = 10, per_proxy = 100,
    crawlers = { "forage", "scrapy", "go" }, fewer = { scrapy = 100 }, ceiling = true, timeout = 90 },
}

local TARGETS = {
  blog_rate = 3, scrapy_rate = 10, go_rate = 1.2, -- (i) forage's pages/s over the peer's
  blog_cpu = 3, floor_cpu = 1 / 1.3,               -- (i) the peer's CPU/page over forage's
  ceiling_ii = 0.9, pss_ii = 20, ceiling_iii = 0.8,
  state_rate = 0.9,                                -- (i) forage's pages/s with its state over without
}
local WRK_SECONDS = 5
local FLOOR_LISTS, FLOOR_ROUNDS = 100, 2 -- the floor parses 100 list + 1,000 detail pages, twice
local MAX_LISTS = 500

local NAMES = {
  forage = "forage (bench/crawl/spider.lua)",
  forage_state = "forage + state (--state DIR --fresh)",
  blog = "blog (multiprocessing.Pool + requests + lxml)",
  scrapy = "Scrapy",
  go = "Go (net/http + goquery, as Colly)",
}

local h, infra, site, answers

local function say(fmt, ...)
  io.write("  ", string.format(fmt, ...), "\n")
  io.stdout:flush()
end

local function list_from_env(name, all)
  local v = os.getenv(name)
  if not v or v == "" then return all end
  local set = {}
  for w in v:gmatch("[^,%s]+") do set[w] = true end
  local out = {}
  for _, x in ipairs(all) do
    if set[type(x) == "table" and x.id or x] then out[#out + 1] = x end
  end
  return out
end

-- ---------------------------------------------------------------------------------
-- One measured run of one crawler

local function last_json(out, prefix)
  local found
  for line in out:gmatch("[^\n]+") do
    local body
    if prefix then body = line:match("^" .. prefix .. "%s*(%b{})%s*$") else body = line:match("^%s*(%b{})%s*$") end
    if body then found = body end
  end
  return found and answers.decode(found)
end

-- Runs argv under measure.py; returns a result table (pages, items, seconds, rate, cpu,
-- cpu_per_page, pss_kb, ok) or one with .err (did not run) / .wrong (ran, wrong answer) /
-- .not_built (forage without its crawl engine).
local function measure(name, argv, opts)
  local cmd = { h.python, h.dir .. "/crawl/measure.py", "--timeout", tostring(opts.timeout) }
  if opts.pss then cmd[#cmd + 1] = "--pss" end
  cmd[#cmd + 1] = "--"
  for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
  os.remove(opts.out)
  local out = h.capture(cmd, opts.timeout + 30)
  local m = last_json(out, "MEASURE")
  local r = last_json(out) or {}
  r.name = name
  if r.not_built then
    r.err = "not built yet (" .. tostring(r.not_built) .. ")"
    return r
  end
  local function tail()
    local last
    for line in out:gmatch("[^\n]+") do
      if not line:match("^MEASURE") and line:match("%S") then last = line end
    end
    return (last or "(no output)"):sub(1, 300)
  end
  if not m then
    r.err = "measure.py gave no figures: " .. tail()
    return r
  end
  r.cpu, r.wall, r.pss_kb = m.cpu, m.wall, m.peak_pss_kb
  if m.timed_out then
    r.err = string.format("timed out after %d s", opts.timeout)
  elseif m.exit ~= 0 then
    r.err = string.format("exit %s: %s", tostring(m.exit), tail())
  elseif not r.pages or not r.seconds then
    r.err = "no figures in its output: " .. tail()
  end
  if r.err then return r end
  local ok, why = answers.check(opts.out, opts.answer, opts.details)
  if not ok then
    r.wrong = why
    return r
  end
  r.ok = true
  r.rate = r.pages / r.seconds
  r.cpu_per_page = r.cpu / r.pages
  return r
end

local function fmt_rate(x) return x and h.rate(x) or "-" end
local function fmt_ms(x) return x and string.format("%.3f ms", x * 1000) or "-" end
local function fmt_mb(kb) return kb and string.format("%.1f MB", kb / 1024) or "-" end

local function describe(r)
  if r.err then return string.format("%s: %s", r.name, r.err) end
  if r.wrong then return string.format("%s: %s (not timed)", r.name, r.wrong) end
  local s = string.format("%s: %d pages in %.2f s = %s, CPU %.2f s = %s/page", r.name, r.pages, r.seconds,
    fmt_rate(r.rate), r.cpu, fmt_ms(r.cpu_per_page))
  if r.pss_kb then s = s .. ", peak PSS " .. fmt_mb(r.pss_kb) end
  if (tonumber(r.state_bytes) or 0) > 0 then s = s .. ", state.db " .. fmt_mb(r.state_bytes / 1024) end
  if (tonumber(r.retries) or 0) > 0 then s = s .. ", " .. math.tointeger(r.retries) .. " retries" end
  return s
end

-- ---------------------------------------------------------------------------------
-- The runs of one row

local crawler_argv = {}

function crawler_argv.forage(_, row, start, proxies, slots, out)
  return { h.lua, h.dir .. "/crawl/forage_run.lua", h.dir .. "/crawl/spider.lua", start, proxies, tostring(slots),
    out, tostring(row.per_proxy) }
end

-- The same run with a crawl state in a new directory (forage.crawl's state and fresh options).
function crawler_argv.forage_state(ctx, row, start, proxies, slots, out)
  ctx.state_runs = (ctx.state_runs or 0) + 1
  local argv = crawler_argv.forage(ctx, row, start, proxies, slots, out)
  argv[#argv + 1] = string.format("%s/state-%s-%d", ctx.tmp, row.id, ctx.state_runs)
  return argv
end

function crawler_argv.blog(_, row, start, proxies, _, out)
  return { h.python, h.dir .. "/crawl/blog.py", start, proxies, tostring(row.blog_processes), out }
end

function crawler_argv.scrapy(_, _, start, proxies, slots, out)
  return { h.python, h.dir .. "/crawl/scrapy_peer.py", start, proxies, tostring(slots), out }
end

function crawler_argv.go(ctx, _, start, proxies, slots, out)
  if not ctx.go_bin then return { "sh", "-c", "echo " .. h.quote(ctx.go_err or "not built") .. "; exit 1" } end
  return { ctx.go_bin, start, proxies, tostring(slots), out }
end

-- Best of CRAWL_ROUNDS runs (pages/s), the runs of the crawlers interleaved. start(name)
-- gives the start file and the number of detail pages of that crawler's run.
local function run_crawlers(ctx, row, start, proxies, slots, answer, crawlers)
  local rounds = tonumber(os.getenv("CRAWL_ROUNDS") or "") or 1
  local best = {}
  for round = 1, rounds do
    for _, name in ipairs(crawlers) do
      local prev = best[name]
      if not (prev and (prev.err or prev.wrong)) then
        local out = string.format("%s/items-%s-%s.jsonl", ctx.tmp, row.id, name)
        local start_file, details = start(name)
        local r = measure(name, crawler_argv[name](ctx, row, start_file, proxies, slots, out), {
          timeout = row.timeout, pss = row.pss, out = out, answer = answer, details = details })
        say("(%s) run %d: %s", row.id, round, describe(r))
        if not prev or (r.ok and (not prev.ok or r.rate > prev.rate)) or not r.ok then best[name] = r end
      end
    end
  end
  return best
end

-- The C floor on 100 list + 1,000 detail pages of the site: CPU seconds per page.
local function run_floor(ctx)
  local root = h.first_line { "realpath", h.dir .. "/.." }
  local src, bin = h.dir .. "/html_floor.c", root .. "/build/html_floor"
  if not h.sh(string.format("test %s -nt %s", h.quote(bin), h.quote(src))) then
    local out, ok = h.capture({ "sh", "-c", string.format("mkdir -p %s && cc -O2 $(xml2-config --cflags) -o %s %s "
      .. "$(xml2-config --libs)", h.quote(root .. "/build"), h.quote(bin), h.quote(src)) }, 120)
    if not ok then return { name = "C floor", err = "cannot build " .. bin .. ": " .. out:sub(1, 300) } end
  end
  local dir = ctx.tmp .. "/floor"
  local links = { "mkdir -p " .. h.quote(dir) }
  local n = 0
  for i = 1, FLOOR_LISTS do
    n = n + 1
    links[#links + 1] = string.format("ln -s %s/www/page/%d %s/%03d.html", ctx.tmp, i, dir, n)
  end
  for i = 1, FLOOR_LISTS * 10 do
    n = n + 1
    links[#links + 1] = string.format("ln -s %s/www/detail/%d %s/%03d.html", ctx.tmp, i, dir, n)
  end
  h.write_file(ctx.tmp .. "/floor.sh", table.concat(links, "\n") .. "\n")
  assert(h.sh("sh " .. h.quote(ctx.tmp .. "/floor.sh")))
  local out, ok = h.capture({ bin, dir, tostring(FLOOR_ROUNDS), tostring(FLOOR_LISTS) }, 120)
  local r = ok and last_json(out)
  if not r then return { name = "C floor", err = out:sub(1, 300) } end
  r.name = "C floor"
  r.cpu_per_page = r.cpu / r.pages
  r.ok = true
  say("(i) C floor: %d pages parsed + queried, CPU %.2f s = %s/page (libxml2 %s)", r.pages, r.cpu,
    fmt_ms(r.cpu_per_page), tostring(r.libxml2))
  return r
end

-- The ceiling of a row with latency: slots/latency, wrk through the proxies, and the origin's
-- own capacity (wrk straight at it with 4x the row's slots).
local function run_ceiling(ctx, row, origin, proxies, slots, pages)
  local through = infra.wrk(ctx.tmp, origin, proxies.urls, row.per_proxy, WRK_SECONDS, pages, row.id .. "-proxies")
  local direct = infra.wrk(ctx.tmp, origin, { origin.url }, slots * 4, 3, pages, row.id .. "-origin", 2)
  local c = { by_latency = slots / row.latency, wrk = through.rate, wrk_run = through, origin = direct.rate,
    origin_run = direct }
  c.value = math.min(c.by_latency, c.wrk)
  c.by = c.value == c.wrk and "wrk through the proxies" or "slots/latency"
  say("(%s) ceiling %s (%s): slots/latency %d/%.3f s = %s; wrk -t1 -c%d through each of the %d proxies %s "
    .. "(%d non-2xx); origin alone (wrk -t2 -c%d) %s", row.id, fmt_rate(c.value), c.by, slots, row.latency,
    fmt_rate(c.by_latency), row.per_proxy, #proxies.urls, fmt_rate(c.wrk), through.non2xx, slots * 4,
    fmt_rate(c.origin))
  if through.non2xx > 0 or direct.non2xx > 0 then
    c.err = string.format("wrk saw non-2xx responses: %d through the proxies, %d at the origin", through.non2xx,
      direct.non2xx)
  end
  return c
end

-- A row of run.lua's table: forage's figure against a reference; ratio = how many times
-- better forage did. value(r) takes a crawler result; better = "high" | "low".
local function compare(label, forage, other, value, better, target, format, notes)
  local row = { name = label, target = target, notes = notes or {} }
  local f = forage and forage.ok and value(forage)
  local o = other and other.ok ~= false and value(other)
  row.forage = f and format(f) or (forage and forage.err and forage.err:match("^not built") and "not built yet")
    or (forage and forage.wrong and "WRONG") or "-"
  row.peer = o and format(o) or (other and other.wrong and "WRONG") or "-"
  if f and o and f > 0 and o > 0 then row.ratio = better == "high" and f / o or o / f end
  row.pass = row.ratio ~= nil and row.ratio >= target
  local broken = {}
  for _, r in ipairs { forage or false, other or false } do
    if r and r.err and not r.err:match("^not built") then broken[#broken + 1] = r.name .. ": " .. r.err end
  end
  if #broken > 0 then
    row.err = table.concat(broken, "; ")
    row.notes[#row.notes + 1] = "ERROR " .. row.err
  end
  if forage and forage.err and forage.err:match("^not built") then
    table.insert(row.notes, 1, "forage: not built yet (forage.crawl is not there: the peers ran)")
  end
  for _, r in ipairs { forage or false, other or false } do
    if r and r.wrong then row.notes[#row.notes + 1] = r.name .. " " .. r.wrong end
  end
  return row
end

-- ---------------------------------------------------------------------------------
-- The section

local function build_go(ctx)
  local gocache = ctx.tmp .. "/gocache"
  local bin = ctx.tmp .. "/colly"
  local out, ok = h.capture({ "env", "GO111MODULE=off", "GOPATH=/usr/share/gocode", "GOCACHE=" .. gocache,
    "GOFLAGS=", "go", "build", "-o", bin, h.dir .. "/crawl/colly.go" }, 180)
  if ok then
    ctx.go_bin = bin
  else
    ctx.go_err = "go build failed: " .. out:gsub("\n", " "):sub(1, 300)
  end
end

local function run_row(ctx, row, results, rows)
  local details = row.lists * site.PER_LIST
  local slots = row.proxies * row.per_proxy
  say("(%s) %d proxies x %d slots, %s added per response, %d list + %d detail pages",
    row.id, row.proxies, row.per_proxy, row.latency > 0 and h.ms(row.latency) or "nothing", row.lists, details)
  local origin = infra.start_origin(ctx.tmp, row.latency)
  ctx.stop[#ctx.stop + 1] = function() infra.stop(origin.pid) end
  local ok, err = pcall(function()
    local function start(name)
      local lists = row.fewer and row.fewer[name] or row.lists
      local file = string.format("%s/start-%s-%d.txt", ctx.tmp, row.id, lists)
      local lines = {}
      for n = 1, lists do lines[n] = string.format("%s/page/%d", origin.url, n) end
      h.write_file(file, table.concat(lines, "\n") .. "\n")
      return file, lists * site.PER_LIST
    end
    for name, lists in pairs(row.fewer or {}) do
      say("(%s) %s crawls %d list + %d detail pages (fewer: it is slow, and CPU-bound at its rate, so its "
        .. "pages/s holds)", row.id, name, lists, lists * site.PER_LIST)
    end
    local proxies = infra.start_proxies(ctx.tmp, row.proxies, math.max(100, row.per_proxy * 2))
    ctx.stop[#ctx.stop + 1] = function() infra.stop_proxies(proxies) end
    local answer = answers.read(ctx.tmp .. "/answer.tsv", details)
    local ceiling = row.ceiling and run_ceiling(ctx, row, origin, proxies, slots, details)
    local crawlers = list_from_env("CRAWL_PEERS", row.crawlers)
    local best = run_crawlers(ctx, row, start, proxies.file, slots, answer, crawlers)
    local floor = row.floor and run_floor(ctx)
    infra.stop_proxies(proxies)
    results[row.id] = { crawlers = best, ceiling = ceiling, floor = floor, slots = slots, lists = row.lists,
      details = details, latency = row.latency, proxies = row.proxies }

    local f = best.forage
    local function rate(r) return r.rate end
    local function cpu(r) return r.cpu_per_page end
    local function pss(r) return r.pss_kb end
    local id = row.id
    if id == "i" then
      local peers = {
        { "blog", TARGETS.blog_rate }, { "scrapy", TARGETS.scrapy_rate }, { "go", TARGETS.go_rate } }
      for _, p in ipairs(peers) do
        if best[p[1]] then
          rows[#rows + 1] = compare(string.format("(i) pages/s, forage vs %s", NAMES[p[1]]), f, best[p[1]],
            rate, "high", p[2], fmt_rate, { describe(best[p[1]]), f and f.ok and describe(f) or nil })
        end
      end
      if best.blog then
        rows[#rows + 1] = compare("(i) CPU/page (all crawler processes), forage vs blog", f, best.blog, cpu, "low",
          TARGETS.blog_cpu, fmt_ms)
      end
      local floor_note = "C floor not run"
      if floor then
        floor_note = floor.err and ("C floor: " .. floor.err) or string.format("C floor: build/html_floor on %d list "
          .. "+ %d detail pages of the site, %d rounds, CPU seconds of the timed rounds", FLOOR_LISTS,
          FLOOR_LISTS * 10, FLOOR_ROUNDS)
      end
      rows[#rows + 1] = compare("(i) CPU/page, forage vs the C floor (libxml2 parse + query only)", f, floor, cpu,
        "low", TARGETS.floor_cpu, fmt_ms, { "target: forage's CPU/page at most 1.3x the floor's", floor_note })
      local on = best.forage_state
      if on then
        local notes = { "the 'python' column is forage without a state; target: on keeps 90% of off's pages/s",
          describe(on) }
        if f then notes[#notes + 1] = describe(f) end
        if on.ok and f and f.ok then
          notes[#notes + 1] = string.format("CPU/page on/off: %s / %s = %.2fx", fmt_ms(on.cpu_per_page),
            fmt_ms(f.cpu_per_page), on.cpu_per_page / f.cpu_per_page)
        end
        rows[#rows + 1] = compare("(i) pages/s, forage with its state (issue 9) vs without", on, f, rate, "high",
          TARGETS.state_rate, fmt_rate, notes)
      end
    else
      local c = ceiling
      local ceiling_result = { name = "ceiling", ok = not c.err, err = c.err, rate = c.value }
      local notes = {
        string.format("ceiling = min(slots/latency %s, wrk through the same proxies %s) = %s; the origin alone "
          .. "served %s (wrk -t2 -c%d)", fmt_rate(c.by_latency), fmt_rate(c.wrk), fmt_rate(c.value),
          fmt_rate(c.origin), slots * 4),
      }
      for _, name in ipairs(crawlers) do
        if name ~= "forage" then notes[#notes + 1] = describe(best[name]) end
      end
      if f and f.ok then notes[#notes + 1] = describe(f) end
      rows[#rows + 1] = compare(string.format("(%s) pages/s, forage vs the ceiling, %d slots, %s latency", id, slots,
        h.ms(row.latency)), f, ceiling_result, rate, "high", TARGETS["ceiling_" .. id], fmt_rate, notes)
      if row.pss and best.blog then
        rows[#rows + 1] = compare(string.format("(%s) peak PSS of all crawler processes, forage vs blog (%d processes)",
          id, row.blog_processes), f, best.blog, pss, "low", TARGETS.pss_ii, fmt_mb,
          { "sum of /proc/PID/smaps_rollup Pss over the crawler's process tree, sampled every 50 ms, peak kept" })
      end
    end
  end)
  infra.stop(origin.pid)
  if not ok then error(err, 0) end
end

-- The markdown table and JSON of every crawler's figures (for docs/benchmarks.md).
local function report(results, json_path)
  say("")
  say("| row | crawler | pages | pages/s | CPU/page | peak PSS | note |")
  say("|---|---|---:|---:|---:|---:|---|")
  for _, row in ipairs(ROWS) do
    local res = results[row.id]
    if res then
      local function line(name, r)
        local note = r.err or r.wrong or ""
        local off = res.crawlers.forage
        if note == "" and (tonumber(r.state_bytes) or 0) > 0 and r.ok and off and off.ok then
          note = string.format("state on/off: %.2fx pages/s, %.2fx CPU/page; state.db %s", r.rate / off.rate,
            r.cpu_per_page / off.cpu_per_page, fmt_mb(r.state_bytes / 1024))
        end
        say("| (%s) | %s | %s | %s | %s | %s | %s |", row.id, name, r.pages and math.tointeger(r.pages) or "-",
          r.ok and fmt_rate(r.rate) or "-", r.ok and fmt_ms(r.cpu_per_page) or "-", r.ok and fmt_mb(r.pss_kb) or "-",
          note:gsub("|", "/"):sub(1, 120))
      end
      for _, name in ipairs(row.crawlers) do
        if res.crawlers[name] then line(NAMES[name], res.crawlers[name]) end
      end
      if res.floor then
        local fl = res.floor
        say("| (%s) | C floor (parse + query only) | %s | - | %s | - | %s |", row.id, math.tointeger(fl.pages) or "-",
          fmt_ms(fl.cpu_per_page), fl.err or "")
      end
      if res.ceiling then
        local c = res.ceiling
        say("| (%s) | ceiling (%s) | - | %s | - | - | slots/latency %s, wrk via proxies %s, origin alone %s |",
          row.id, c.by, fmt_rate(c.value), fmt_rate(c.by_latency), fmt_rate(c.wrk), fmt_rate(c.origin))
      end
    end
  end
  local plain = {}
  for id, res in pairs(results) do
    local crawlers = {}
    for name, r in pairs(res.crawlers) do
      crawlers[name] = { pages = r.pages, seconds = r.seconds, rate = r.rate, cpu = r.cpu,
        cpu_per_page = r.cpu_per_page, pss_kb = r.pss_kb, retries = r.retries, state_bytes = r.state_bytes,
        ok = r.ok or false, err = r.err, wrong = r.wrong }
    end
    plain[id] = { crawlers = crawlers, slots = res.slots, lists = res.lists, details = res.details,
      latency = res.latency, proxies = res.proxies,
      floor = res.floor and { cpu_per_page = res.floor.cpu_per_page, pages = res.floor.pages, err = res.floor.err },
      ceiling = res.ceiling and { value = res.ceiling.value, by = res.ceiling.by, by_latency = res.ceiling.by_latency,
        wrk = res.ceiling.wrk, origin = res.ceiling.origin } }
  end
  h.write_file(json_path, h.json_encode(plain) .. "\n")
  say("figures as JSON: %s", json_path)
end

local function section(harness)
  h = harness
  package.path = h.dir .. "/crawl/?.lua;" .. package.path
  infra, site, answers = require "infra", require "site", require "answer"
  infra.init(h)
  math.randomseed(os.time(), tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0)
  local root = h.first_line { "realpath", h.dir .. "/.." } -- absolute: nginx's prefix must be
  assert(h.sh("mkdir -p " .. h.quote(root .. "/build")))
  local tmp = h.first_line { "mktemp", "-d", root .. "/build/crawl-bench.XXXXXX" }
  if not tmp:match("/build/crawl%-bench%.") then error("mktemp failed: " .. tmp) end
  local ctx = { tmp = tmp, stop = {} }
  local rows, results = {}, {}
  local started = os.time()
  local ok, err = pcall(function()
    local wanted = list_from_env("CRAWL_ROWS", ROWS)
    local lists = 0
    for _, row in ipairs(wanted) do lists = math.max(lists, row.lists) end
    local t0 = os.clock()
    local s = site.write(tmp, math.min(lists, MAX_LISTS))
    say("site: %d list + %d detail pages (%.1f KB a detail page on average, %.1f MB in all), written in %.1f s to %s",
      s.lists, s.details, s.detail_bytes / s.details / 1024, s.bytes / 1048576, os.clock() - t0, tmp)
    say("nginx %s with %d worker(s), keep-alive; %s; each crawler measured by bench/crawl/measure.py "
      .. "(CPU of its whole process tree, including start-up)",
      h.first_line { infra.NGINX, "-v" }:match("nginx/%S+") or "?", infra.NGINX_WORKERS,
      h.first_line { infra.TINYPROXY, "-v" })
    say("one run of each crawler (CRAWL_ROUNDS=N keeps the best of N); a run whose items differ from the "
      .. "site's answer is WRONG and not timed")
    build_go(ctx)
    if ctx.go_err then say("Go peer: %s", ctx.go_err) end
    for _, row in ipairs(wanted) do run_row(ctx, row, results, rows) end
    report(results, root .. "/build/crawl-bench.json")
  end)
  for i = #ctx.stop, 1, -1 do pcall(ctx.stop[i]) end
  say("crawl section: %d s", os.time() - started)
  if os.getenv("CRAWL_KEEP") ~= "1" then h.sh("rm -rf " .. h.quote(tmp)) else say("kept %s", tmp) end
  if not ok then error(err, 0) end
  return rows
end

return section
