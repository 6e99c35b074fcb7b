-- The html section of `make bench`: parse + XPath extraction of the same ~16 KB pages by
-- forage.html, by python3-lxml (bench/html_peer.py) and by a few lines of C calling libxml2
-- directly (bench/html_floor.c, the floor: all three sit on the same libxml2).
--
-- As a module (run.lua): writes the pages to a temporary directory, builds build/html_floor
-- when missing or older than its source, and returns the rows (a function(h) -> rows).
-- As a script: `lua5.4 bench/html_bench.lua NAME` runs one forage measurement in this fresh
-- process (the pages' directory in $FORAGE_HTML_PAGES) and prints it as JSON, as
-- html_peer.py does for Python and build/html_floor DIR ROUNDS does for C.
--
-- Each side reads every page into memory first (not timed), makes one untimed pass that
-- also checksums what it extracted, then times ROUNDS rounds of: parse each page with its
-- URL, run XPATH_HREF and XPATH_DIRECTORS, count the results.

local PAGES = 200       -- files NNN.html, NNN from 001; URL_PREFIX .. NNN is each one's URL
local ROUNDS = 10       -- timed rounds over all the pages (the peers read it from the env too)
local URL_PREFIX = "https://ssr1.scrape.center/page/"
local XPATH_HREF = '//a[@class="name"]/@href'
local XPATH_DIRECTORS = '//div[@class="directors el-row"]//p/text()'
local FORAGE_TARGET = 1.0 -- forage vs lxml: at least as fast
local FLOOR_TARGET = 0.9  -- forage vs raw libxml2: within 10%

-- ---------------------------------------------------------------------------------
-- The pages: a movie list page, deterministic (its own LCG: no math.random state).

local function page_html(k)
  local seed = k * 2654435761 % 4294967296
  local function rand(n) -- 1..n
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed // 65536 % n + 1
  end
  local words = { "霸王别姬", "Farewell", "My", "Concubine", "这个杀手不太冷", "Léon", "肖申克的救赎",
    "The", "Shawshank", "Redemption", "泰坦尼克号", "Titanic", "罗马假日", "Roman", "Holiday", "唐伯虎点秋香",
    "Flirting", "Scholar", "乱世佳人", "Gone", "with", "the", "Wind", "喜剧之王", "King", "of", "Comedy" }
  local cats = { "剧情", "爱情", "喜剧", "动作", "犯罪", "战争", "传记", "历史", "冒险", "奇幻" }
  local function phrase(n)
    local t = {}
    for i = 1, n do t[i] = words[rand(#words)] end
    return table.concat(t, " ")
  end
  local out = {}
  local function w(s) out[#out + 1] = s end
  w('<!DOCTYPE html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n')
  w('<meta name="viewport" content="width=device-width,initial-scale=1">\n')
  w(string.format('<title>Scrape | Movie | page %d</title>\n', k))
  w('<link href="/css/app.css" rel="stylesheet"><link href="/css/chunk-vendors.css" rel="stylesheet">\n')
  w('<script>window.__CONFIG__ = {"api": "/api/movie", "limit": 10, "theme": "light"};</script>\n')
  w('</head>\n<body>\n<div id="app"><div data-v-74e8b908="" class="el-row" id="header">')
  w('<div class="el-col el-col-24"><div class="logo"><a href="/"><img src="/img/logo.png" class="logo-image">')
  w('<span class="logo-title">Scrape</span></a></div></div></div>\n<div data-v-7f856186="" id="index">\n')
  w('<div class="el-row"><div class="el-col el-col-18 el-col-offset-3">\n')
  local cards = 8 + rand(4) - 1 -- 8..11 cards
  for c = 1, cards do
    local id = (k - 1) * 12 + c
    w('<div data-v-7f856186="" class="el-card item m-t is-hover-shadow"><div class="el-card__body">')
    w('<div data-v-7f856186="" class="el-row"><div class="el-col el-col-24 el-col-xs-8 el-col-sm-6 el-col-md-4">')
    w(string.format('<a data-v-7f856186="" href="/detail/%d" class="">', id))
    w(string.format('<img data-v-7f856186="" src="https://p0.meituan.net/movie/%08x.jpg@464w_644h_1e_1c" ',
      rand(2147483647)))
    w('class="cover"></a></div>\n<div class="p-h el-col el-col-24 el-col-xs-9 el-col-sm-13 el-col-md-16">')
    w(string.format('<a data-v-7f856186="" href="/detail/%d" class="name"><h2 data-v-7f856186="" class="m-b-sm">',
      id))
    w(string.format('%s - %s</h2></a>\n<div data-v-7f856186="" class="categories">', phrase(2), phrase(3)))
    for _ = 1, rand(3) do
      w('<button data-v-7f856186="" type="button" class="el-button category el-button--primary el-button--mini">')
      w(string.format('<span>%s</span></button>', cats[rand(#cats)]))
    end
    w('</div>\n<div data-v-7f856186="" class="m-v-sm info"><span data-v-7f856186="">中国大陆、中国香港</span>')
    w(string.format('<span data-v-7f856186=""> / </span><span data-v-7f856186="">%d 分钟</span></div>', 90 + rand(90)))
    w(string.format('<div data-v-7f856186="" class="m-v-sm info"><span data-v-7f856186="">%d-%02d-%02d 上映</span>',
      1950 + rand(70), rand(12), rand(28)))
    w('</div></div>\n<div data-v-7f856186="" class="el-col el-col-24 el-col-xs-5 el-col-sm-5 el-col-md-4">')
    w(string.format('<p data-v-7f856186="" class="score m-t-md m-b-n-sm">%d.%d</p>', 7 + rand(3) - 1, rand(10) - 1))
    w('<p data-v-7f856186=""><div data-v-7f856186="" role="slider" class="el-rate"><span class="el-rate__item">')
    w('<i class="el-rate__icon el-icon-star-on"></i></span></div></p></div></div></div></div>\n')
  end
  w('<div data-v-7f856186="" class="directors el-row"><h3 data-v-7f856186="">导演</h3>\n')
  for _ = 1, rand(3) do
    w('<div data-v-7f856186="" class="director el-col el-col-4"><img src="/img/d.jpg" class="image">')
    w(string.format('<p data-v-7f856186="" class="text-center m-t-xs">%s</p></div>\n', phrase(2)))
  end
  w('</div>\n<div class="el-pagination is-background"><ul class="el-pager">')
  for p = 1, 10 do w(string.format('<li class="number"><a href="/page/%d">%d</a></li>', p, p)) end
  w('</ul></div>\n</div></div></div></div>\n<footer><p class="note">')
  w(phrase(40))
  w('</p></footer>\n<script src="/js/chunk-vendors.js"></script><script src="/js/app.js"></script>\n')
  w('</body>\n</html>\n')
  return table.concat(out)
end

local function page_path(dir, i) return string.format("%s/%03d.html", dir, i) end
local function page_url(i) return string.format("%s%03d", URL_PREFIX, i) end

-- Writes the PAGES pages to dir; returns their total size in bytes.
local function write_pages(dir)
  local total = 0
  for i = 1, PAGES do
    local body = page_html(i)
    local f = assert(io.open(page_path(dir, i), "wb"))
    f:write(body)
    f:close()
    total = total + #body
  end
  return total
end

-- ---------------------------------------------------------------------------------
-- The forage measurement (runs in a process of its own)

local trials = {}

function trials.parse_xpath(forage)
  local html = forage.html
  local dir = assert(os.getenv("FORAGE_HTML_PAGES"), "FORAGE_HTML_PAGES is not set")
  local rounds = tonumber(os.getenv("FORAGE_HTML_ROUNDS") or "") or ROUNDS
  local bodies, urls = {}, {}
  for i = 1, math.huge do
    local f = io.open(page_path(dir, i), "rb")
    if not f then break end
    bodies[i], urls[i] = f:read("a"), page_url(i)
    f:close()
  end
  local n = #bodies
  if n == 0 then error("no pages in " .. dir) end
  -- One untimed pass: warms up and checksums the strings extracted.
  local bytes = 0
  for i = 1, n do
    local doc = html.parse(bodies[i], urls[i])
    for _, s in ipairs(doc:xpath(XPATH_HREF)) do bytes = bytes + #s end
    for _, s in ipairs(doc:xpath(XPATH_DIRECTORS)) do bytes = bytes + #s end
    doc:close()
  end
  local hrefs, directors = 0, 0
  local t0 = forage.now()
  for _ = 1, rounds do
    for i = 1, n do
      local doc = html.parse(bodies[i], urls[i])
      hrefs = hrefs + #doc:xpath(XPATH_HREF)
      directors = directors + #doc:xpath(XPATH_DIRECTORS)
      doc:close()
    end
  end
  local seconds = forage.now() - t0
  return { seconds = seconds, pages = n * rounds, rate = n * rounds / seconds,
    hrefs = hrefs // rounds, directors = directors // rounds, bytes = bytes }
end

-- CSS on a long flat page: 80,000 <div><a> rows (2.2 MB). The descendant combinator
-- ("div a") must cost about what the child combinator ("div > a") does: compiled left to
-- right, libxml2 took 10 s for it against 0.02 s.
local CSS_ROWS = 80000
local CSS_TARGET = 0.25 -- "div a" within 4 times "div > a" (noise aside, they cost the same; quadratic was 500x)

local function css_trial(forage, selector)
  local rows = {}
  for i = 1, CSS_ROWS do rows[i] = string.format("<div><a href='/%d'>row %d</a></div>", i, i) end
  local doc = forage.html.parse("<html><body>" .. table.concat(rows) .. "</body></html>")
  assert(#doc:css(selector) == CSS_ROWS)   -- untimed: warms the selector cache
  local t0 = forage.now()
  local found = #doc:css(selector)
  local seconds = forage.now() - t0
  doc:close()
  return { seconds = seconds, found = found }
end

function trials.css_descendant(forage) return css_trial(forage, "div a") end
function trials.css_child(forage) return css_trial(forage, "div > a") end

-- ---------------------------------------------------------------------------------
-- The section

-- Builds root/build/html_floor from bench/html_floor.c when missing or older; returns its
-- path, or nil and why not.
local function build_floor(h, root)
  local src, bin = h.dir .. "/html_floor.c", root .. "/build/html_floor"
  if h.sh(string.format("test %s -nt %s", h.quote(bin), h.quote(src))) then return bin end
  local cmd = string.format("mkdir -p %s && cc -O2 $(xml2-config --cflags) -o %s %s $(xml2-config --libs) 2>&1",
    h.quote(root .. "/build"), h.quote(bin), h.quote(src))
  local f = assert(io.popen(cmd, "r"))
  local out = f:read("a")
  if not f:close() then return nil, "cannot build " .. bin .. ": " .. out:gsub("\n", " ") end
  return bin
end

-- Best of h.rounds interleaved triples (forage, lxml, C floor), a side that failed once not
-- run again, as h.pairs does for two. Returns a h.pairs-shaped result for forage vs each.
local function triples(h, argvs)
  local sides = { "forage", "lxml", "floor" }
  local best, runs, err = {}, { forage = {}, lxml = {}, floor = {} }, {}
  for _ = 1, h.rounds do
    for _, side in ipairs(sides) do
      if not err[side] then
        local v, why = h.trial(argvs[side])
        local x = v and tonumber(v.rate)
        if not x then
          err[side] = v and "no 'rate' in its result" or why
        else
          table.insert(runs[side], x)
          if not best[side] or x > best[side].rate then best[side] = v end
        end
      end
    end
  end
  local function vs(peer)
    local res = {
      forage = best.forage and best.forage.rate, peer = best[peer] and best[peer].rate,
      forage_runs = runs.forage, peer_runs = runs[peer],
      forage_best = best.forage, peer_best = best[peer],
    }
    if err.forage then res.err = "forage: " .. err.forage
    elseif err[peer] then res.err = peer .. ": " .. err[peer] end
    return res
  end
  return vs("lxml"), vs("floor"), best
end

local function section(h)
  local sh = h.sh
  local root = h.dir .. "/.."
  local rows = {}
  local tmp = h.first_line { "mktemp", "-d", "/tmp/forage-html-bench.XXXXXX" }
  if not tmp:match("^/tmp/forage%-html%-bench%.") then error("mktemp failed: " .. tmp) end
  local ok, err = pcall(function()
    local total = write_pages(tmp)
    local floor, why = build_floor(h, root)
    local env = { "env", "FORAGE_HTML_PAGES=" .. tmp, "FORAGE_HTML_ROUNDS=" .. ROUNDS }
    local function with_env(...)
      local argv = table.move(env, 1, #env, 1, {})
      return table.move({ ... }, 1, select("#", ...), #argv + 1, argv)
    end
    local argvs = {
      forage = with_env(h.lua, h.dir .. "/html_bench.lua", "parse_xpath"),
      lxml = with_env(h.python, h.dir .. "/html_peer.py", "parse_xpath"),
      floor = floor and { floor, tmp, tostring(ROUNDS) } or { "sh", "-c", "echo " .. h.quote(why) .. "; exit 1" },
    }
    local vs_lxml, vs_floor, best = triples(h, argvs)

    -- The three sides must have found the same things.
    local agree, seen = true, {}
    for _, side in ipairs { "forage", "lxml", "floor" } do
      local b = best[side]
      if b then
        seen[#seen + 1] = string.format("%s %s/%s/%s", side, tostring(b.hrefs), tostring(b.directors),
          tostring(b.bytes))
        local f = best.forage
        if f and (b.hrefs ~= f.hrefs or b.directors ~= f.directors or b.bytes ~= f.bytes) then agree = false end
      end
    end
    local counts = "hrefs/director texts/bytes of them a pass: " .. table.concat(seen, ", ")
    local function check(res)
      if not agree then res.err = res.err or ("the sides disagree: " .. counts) end
      return res
    end
    local function ms_page(r) return r and r.rate and string.format("%.3f ms", 1000 / r.rate) or "-" end
    local per_page = string.format("ms per page: forage %s, lxml %s, C floor %s",
      ms_page(best.forage), ms_page(best.lxml), ms_page(best.floor))
    local pages_note = string.format("%d pages of %.1f KB average (%s..), %d timed rounds of parse(body, url)"
      .. " + 2 XPaths each", PAGES, total / PAGES / 1024, page_url(1), ROUNDS)

    local row = h.row("parse + 2 XPaths, forage vs python3-lxml, pages/s", check(vs_lxml),
      { format = h.rate, better = "high", target = FORAGE_TARGET })
    table.insert(row.notes, 1, pages_note)
    table.insert(row.notes, 2, "lxml: etree.fromstring(body, HTMLParser(), base_url=url), "
      .. "tree.xpath(expr, smart_strings=False)")
    table.insert(row.notes, 3, per_page)
    table.insert(row.notes, 4, counts)
    rows[#rows + 1] = row

    row = h.row("parse + 2 XPaths, forage vs C on libxml2 (floor), pages/s", check(vs_floor),
      { format = h.rate, better = "high", target = FLOOR_TARGET })
    table.insert(row.notes, 1, "the python column here is build/html_floor (bench/html_floor.c): "
      .. "htmlReadMemory + xmlXPathEvalExpression, no strings copied out")
    rows[#rows + 1] = row

    local css = h.pairs({ h.lua, h.dir .. "/html_bench.lua", "css_descendant" },
      { h.lua, h.dir .. "/html_bench.lua", "css_child" }, "seconds", "low")
    row = h.row(string.format("css 'div a' vs 'div > a' on %d rows, seconds", CSS_ROWS), css,
      { format = h.ms, better = "low", target = CSS_TARGET })
    table.insert(row.notes, 1, "both columns are forage: the python column here is 'div > a' on the same page")
    rows[#rows + 1] = row
  end)
  sh("rm -rf " .. h.quote(tmp))
  if not ok then error(err, 0) end
  return rows
end

-- ---------------------------------------------------------------------------------
-- Script mode: one forage measurement, printed as JSON.

if arg and arg[0] and arg[0]:match("html_bench%.lua$") then
  local dir = arg[0]:match("^(.*)/[^/]*$") or "."
  package.path = dir .. "/?.lua;" .. package.path
  require("harness").run_trial(trials, "bench/html_bench.lua")
end

return section
