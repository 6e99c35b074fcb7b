-- forage.testing: the bundled movie site and the fault proxies, over real sockets, with
-- forage.http as the client and forage.html checking the pages.
local forage = require "forage"
local testing = require "forage.testing"
local helpers = require "helpers"
local socket = require "socket"

local http, html = forage.http, forage.html

-- The proxies' seeded draw (src/fixture_net.c's fixture_mix; docs/testing.md): request k
-- faults when mix(seed, k, stream) >> 11 < p * 2^53. Streams: flaky 1, reset 2.
local function splitmix(x)
  x = x + 0x9e3779b97f4a7c15
  x = (x ~ (x >> 30)) * 0xbf58476d1ce4e5b9
  x = (x ~ (x >> 27)) * 0x94d049bb133111eb
  return x ~ (x >> 31)
end
local function draws(seed, k, stream, p)
  return (splitmix(splitmix(splitmix(seed) ~ k) ~ stream) >> 11) < p * 2 ^ 53
end

-- A raw exchange on a new connection: sends request, reads until the server closes.
-- Returns the bytes, or nil and luasocket's error.
local function raw(port, request)
  local c = assert(socket.tcp())
  c:settimeout(10)
  assert(c:connect("127.0.0.1", port))
  assert(c:send(request))
  local data, err, partial = c:receive("*a")
  c:close()
  if data then return data end
  return nil, err, partial
end

local function refused(port)
  local c = assert(socket.tcp())
  c:settimeout(5)
  local ok, err = c:connect("127.0.0.1", port)
  c:close()
  return ok == nil and err == "connection refused", err
end

local function get(url, opts)
  return http.get(url, opts)
end

describe("forage.testing.site", function()
  it("lists its movies on /page/N with a next link, categories and a footer of non-crawlable links", function()
    local site <close> = testing.site{ pages = 3, per_page = 4 }
    assert.matches("^http://127%.0%.0%.1:%d+$", site.url)
    assert.are.same({ site.url .. "/page/1", site.url .. "/page/2", site.url .. "/page/3" }, site:start_urls())
    for n = 1, 3 do
      local r = assert(get(site.url .. "/page/" .. n))
      assert.are.equal(200, r.status)
      assert.are.equal("text/html; charset=utf-8", r.headers["content-type"])
      assert.are.equal(tostring(#r.body), r.headers["content-length"])
      local doc <close> = html.parse(r.body, r.url)
      local hrefs = doc:xpath('//div[@class="el-card item"]/a[@class="name"]/@href')
      local want = {}
      for i = 1, 4 do want[i] = "/detail/" .. ((n - 1) * 4 + i) end
      assert.are.same(want, hrefs)
      for i, title in ipairs(doc:css("div.el-card a.name h2::text")) do
        assert.matches("^The %a+ %a+ " .. ((n - 1) * 4 + i) .. "$", title)
      end
      assert.are.equal(4, #doc:css("div.el-card div.categories"))
      assert.are.same(n < 3 and { "/page/" .. (n + 1) } or {}, doc:xpath('//a[@class="next"]/@href'))
      assert.are.same({ "javascript:void(0)", "mailto:info@example.invalid", "#top", "/files/brochure.pdf" },
        doc:xpath("//footer//a/@href"))
    end
    assert.are.same({ list = 3, detail = 0, robots = 0, other = 0 }, site:counters().by_kind)
  end)

  it("answers what a correct spider extracts from every detail page, and not what a careless one does", function()
    local site <close> = testing.site{ pages = 4, per_page = 10, seed = 3 }
    local answer = site:answer()
    local movies, got, careless, amp = 0, {}, 0, 0
    for url in pairs(answer) do movies = movies + 1; assert.matches("^" .. site.url .. "/detail/%d+$", url) end
    assert.are.equal(40, movies)
    local c <close> = http.client{ max = 10 }
    for id = 1, 40 do
      c:submit({ url = site.url .. "/detail/" .. id }, function(r, message)
        assert(r, message)
        assert.are.equal(200, r.status)
        local doc <close> = html.parse(r.body, r.url)
        assert.are.equal(1, #doc:css("h2.m-b-sm"))
        assert.matches(" " .. id .. "$", doc:css("h2.m-b-sm::text")[1])
        got[r.url] = doc:css("div.directors p.name::text")
        local actors = doc:css("div.actors p.name::text")
        assert.is_true(#actors >= 2 and #actors <= 5)
        if #doc:css("p.name::text") ~= #got[r.url] then careless = careless + 1 end
        if r.body:find("&amp;", 1, true) then amp = amp + 1 end
      end)
    end
    c:run()
    assert.are.same(answer, got)
    assert.are.equal(40, careless)   -- p.name unscoped picks up the actors on every page
    local names, with_amp = {}, 0
    for _, directors in pairs(answer) do
      assert.is_true(#directors >= 1 and #directors <= 3)
      for _, name in ipairs(directors) do
        assert.is_nil(names[name], "a name is unique")
        names[name] = true
        if name:find("&", 1, true) then with_amp = with_amp + 1 end
      end
    end
    assert.is_true(with_amp >= 1, "some name has an ampersand (served as &amp;)")
    assert.are.equal(with_amp, amp)
    assert.are.same({ list = 0, detail = 40, robots = 0, other = 0 }, site:counters().by_kind)
  end)

  it("derives everything from its seed", function()
    local function answer_of(seed)
      local site <close> = testing.site{ pages = 2, seed = seed }
      local byid = {}
      for url, directors in pairs(site:answer()) do byid[tonumber(url:match("(%d+)$"))] = directors end
      local body = assert(get(site.url .. "/detail/7")).body
      return byid, body
    end
    local a1, b1 = answer_of(5)
    local a2, b2 = answer_of(5)
    local a3 = answer_of(6)
    assert.are.same(a1, a2)
    assert.are.equal(b1, b2)
    assert.are_not.same(a1, a3)
  end)

  it("pads detail pages to about page_bytes", function()
    local site <close> = testing.site{ pages = 1, page_bytes = 16000 }
    for id = 1, 10 do
      local r = assert(get(site.url .. "/detail/" .. id))
      assert.is_true(#r.body >= 15000 and #r.body <= 17000, #r.body)
      local doc <close> = html.parse(r.body)
      assert.is_true(#doc:css("p.description::text")[1] > 14000)
    end
  end)

  it("serves robots.txt when given, a PDF that is not HTML, and 404s for the rest", function()
    local site <close> = testing.site{ pages = 2, robots = "User-agent: *\nDisallow: /detail/3\n" }
    local r = assert(get(site.url .. "/robots.txt"))
    assert.are.equal(200, r.status)
    assert.are.equal("User-agent: *\nDisallow: /detail/3\n", r.body)
    r = assert(get(site.url .. "/files/brochure.pdf"))
    assert.are.equal(200, r.status)
    assert.are.equal("application/pdf", r.headers["content-type"])
    assert.matches("^%%PDF%-", r.body)
    assert.is_true(#r.body > 2000 and r.body:find("\0", 1, true) ~= nil)
    for _, path in ipairs({ "/nothing", "/page/0", "/page/3", "/detail/0", "/detail/21", "/detail/x" }) do
      r = assert(get(site.url .. path))
      assert.are.equal(404, r.status, path)
      assert.matches("text/html", r.headers["content-type"])
    end
    local none <close> = testing.site{ pages = 1 }
    assert.are.equal(404, assert(get(none.url .. "/robots.txt")).status)
    assert.are.same({ list = 0, detail = 0, robots = 1, other = 7 }, site:counters().by_kind)
    assert.are.same({ list = 0, detail = 0, robots = 1, other = 0 }, none:counters().by_kind)
  end)

  it("answers HEAD with the length and no body, and refuses other methods", function()
    local site <close> = testing.site{ pages = 1 }
    local full = assert(get(site.url .. "/detail/2"))
    local r = assert(http.request{ url = site.url .. "/detail/2", method = "HEAD" })
    assert.are.equal(200, r.status)
    assert.are.equal("", r.body)
    assert.are.equal(tostring(#full.body), r.headers["content-length"])
    r = assert(http.request{ url = site.url .. "/detail/2", method = "POST", body = "x=1" })
    assert.are.equal(405, r.status)
    assert.are.equal("GET, HEAD", r.headers["allow"])
  end)

  it("keeps connections alive for clients that reuse them, and honours Connection: close", function()
    local site <close> = testing.site{ pages = 5 }
    local c <close> = http.client{ max = 1 }
    local ok = 0
    for _, url in ipairs(site:start_urls()) do
      c:submit({ url = url }, function(r) if r and r.status == 200 then ok = ok + 1 end end)
    end
    c:run()
    assert.are.equal(5, ok)
    local counts = site:counters()
    assert.are.equal(5, counts.requests)
    assert.are.equal(1, counts.connections)
    -- Two pipelined requests (a blank line between them is allowed), the second with
    -- Connection: close: both answered, then EOF.
    local port = site.url:match(":(%d+)$")
    local data = assert(raw(port, "GET /page/1 HTTP/1.1\r\nHost: x\r\n\r\n\r\n" ..
      "GET /page/2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    local _, answers = data:gsub("HTTP/1%.1 200 OK", "")
    assert.are.equal(2, answers)
    assert.matches("Connection: keep%-alive.*Connection: close", data)
  end)

  it("raises on unknown options and impossible values", function()
    local function raises(opts, pattern)
      local ok, err = pcall(testing.site, opts)
      assert.is_false(ok)
      assert.matches(pattern, err)
    end
    raises({ page = 3 }, "forage.testing.site: unknown option 'page' %(known: pages, per_page,")
    raises({ pages = 0 }, "option 'pages' must be an integer from 1 to 100000, got 0")
    raises({ per_page = 1.5 }, "option 'per_page' must be")
    raises({ latency = -1 }, "option 'latency' must be")
    raises({ robots = 42 }, "option 'robots' must be")
    raises({ pages = 100000, per_page = 1000 }, "pages %* per_page must be at most 10000000")
    assert.has_error(function() testing.site(5) end, "bad argument #1 to 'site' (table expected, got number)")
  end)

  it("stops on close: the process is gone and the port refuses; use after close raises", function()
    local site = testing.site{ pages = 1 }
    local pid, port = site.pid, tonumber(site.url:match(":(%d+)$"))
    assert.is_true(helpers.exists(pid))
    assert(get(site.url .. "/page/1"))
    site:close()
    assert.is_false(helpers.exists(pid))
    assert.is_true(refused(port))
    site:close()   -- idempotent
    assert.has_error(function() site:counters() end, "attempt to use a closed forage.testing.Site")
    do
      local scoped <close> = testing.site{ pages = 1 }
      pid = scoped.pid
    end
    assert.is_false(helpers.exists(pid))
  end)

  it("keeps serving when the last reference is dropped, until close or the state's end", function()
    local url, pid
    local weak = setmetatable({}, { __mode = "v" })
    do
      local site = testing.site{ pages = 1 }
      url, pid, weak[1] = site.url, site.pid, site
    end
    collectgarbage()
    collectgarbage()
    assert.is_true(helpers.exists(pid))
    assert.are.equal(200, assert(get(url .. "/page/1")).status)
    weak[1]:close()   -- still there: forage.testing holds it until closed
    assert.is_false(helpers.exists(pid))
    -- a script that never closes it: the server stops when that Lua state ends
    local out, ok = helpers.run_lua([[
      local testing = require "forage.testing"
      local site = testing.site{ pages = 1 }
      print(site.pid)
    ]])
    assert.is_true(ok, out)
    local child_site = tonumber(out:match("(%d+)"))
    local deadline = require("forage").now() + 10
    while helpers.exists(child_site) and require("forage").now() < deadline do require("forage").sleep(0.01) end
    assert.is_false(helpers.exists(child_site))
  end)

  it("keeps serving when a forked child closes or collects its copy", function()
    local site <close> = testing.site{ pages = 1 }
    local p = helpers.reaped(finally, forage.process(function()
      site:close()
      collectgarbage()
      os.exit(site.pid == nil and 0 or 1)
    end))
    p:start()
    assert.are.equal(0, helpers.join_or_fail(p, 10))
    assert.is_true(helpers.exists(site.pid))
    assert.are.equal(200, assert(get(site.url .. "/page/1")).status)
  end)

  it("reports live counters to a forked child", function()
    local site <close> = testing.site{ pages = 1 }
    assert(get(site.url .. "/page/1"))
    local p = helpers.reaped(finally, forage.process(function()
      os.exit(site:counters().by_kind.list == 1 and 0 or 1)
    end))
    p:start()
    assert.are.equal(0, helpers.join_or_fail(p, 10))
  end)
end)

describe("forage.testing.proxy", function()
  local site
  setup(function()
    site = testing.site{ pages = 2, per_page = 10 }
  end)
  teardown(function()
    site:close()
  end)

  it("forwards plain HTTP to the site and keeps the client's connection", function()
    local p <close> = testing.proxy("good")
    assert.are.equal("good", p.behaviour)
    assert.are.equal(p.url, p.bare_url)
    local before = site:counters().requests
    local c <close> = http.client{ max = 1 }
    local bodies = {}
    for id = 1, 4 do
      c:submit({ url = site.url .. "/detail/" .. id, proxy = p.url }, function(r, message)
        assert(r, message)
        bodies[id] = r.body
      end)
    end
    c:run()
    for id = 1, 4 do assert.are.equal(assert(get(site.url .. "/detail/" .. id)).body, bodies[id]) end
    local counts = p:counters()
    assert.are.equal(4, counts.requests)
    assert.are.equal(1, counts.connections)
    assert.are.equal(0, counts.inflight)
    assert.are.equal(1, counts.peak_inflight)
    assert.are.equal(before + 8, site:counters().requests)
    local r = assert(http.request{ url = site.url .. "/detail/1", method = "HEAD", proxy = p.url })
    assert.are.equal(200, r.status)
    assert.are.equal(tostring(#bodies[1]), r.headers["content-length"])
  end)

  it("refuses any destination outside 127.0.0.0/8 with a 403, without connecting", function()
    local p <close> = testing.proxy("good")
    for _, url in ipairs({ "http://192.0.2.1/x", "http://example.invalid/", "http://10.0.0.1:8080/" }) do
      local r = assert(get(url, { proxy = p.url, timeout = 10 }))
      assert.are.equal(403, r.status, url)
    end
    local port = p.url:match(":(%d+)$")
    assert.matches("^HTTP/1%.1 403", assert(raw(port, "CONNECT 192.0.2.1:443 HTTP/1.1\r\n\r\n")))
    assert.are.equal(0, p:counters().tunnels)
    local r = assert(get("http://127.0.0.2:" .. site.url:match(":(%d+)$") .. "/", { proxy = p.url }))
    assert.are.equal(502, r.status)   -- loopback but nothing listens on 127.0.0.2: tried, refused
  end)

  it("tunnels CONNECT both ways", function()
    local p <close> = testing.proxy("good")
    local port = p.url:match(":(%d+)$")
    local target = site.url:match("//(.*)$")
    local data = assert(raw(port, "CONNECT " .. target .. " HTTP/1.1\r\nHost: " .. target .. "\r\n\r\n" ..
      "GET /detail/3 HTTP/1.1\r\nHost: " .. target .. "\r\nConnection: close\r\n\r\n"))
    assert.matches("^HTTP/1%.1 200 Connection established\r\n\r\nHTTP/1%.1 200 OK", data)
    assert.are.equal(assert(get(site.url .. "/detail/3")).body, data:match("\r\n\r\n.-\r\n\r\n(.*)$"))
    assert.are.equal(1, p:counters().tunnels)
  end)

  it("dead: nothing listens, the fetch fails with kind proxy", function()
    local p <close> = testing.proxy("dead")
    assert.is_nil(p.pid)
    assert.is_true(refused(tonumber(p.url:match(":(%d+)$"))))
    local r, message, kind = get(site.url .. "/page/1", { proxy = p.url })
    assert.is_nil(r)
    assert.are.equal("proxy", kind, message)
    assert.are.equal(0, p:counters().requests)
  end)

  it("refuse_after:N serves exactly N requests, then refuses connections", function()
    local p <close> = testing.proxy("refuse_after:3")
    local c <close> = http.client{ max = 1 }
    local results = {}
    for id = 1, 6 do
      c:submit({ url = site.url .. "/detail/" .. id, proxy = p.url }, function(r, message, kind)
        results[id] = r and r.status or kind
        if not r then assert.are.equal("proxy", kind, message) end
      end)
    end
    c:run()
    assert.are.same({ 200, 200, 200, "proxy", "proxy", "proxy" }, results)
    local counts = p:counters()
    assert.are.equal(3, counts.requests - counts.refused)
    assert.is_true(refused(tonumber(p.url:match(":(%d+)$"))))
  end)

  it("ban_after:N[:SECONDS] answers 403 with Retry-After after N requests, without the origin", function()
    local p <close> = testing.proxy("ban_after:2:30")
    local before = site:counters().requests
    local statuses = {}
    for id = 1, 5 do
      local r = assert(get(site.url .. "/detail/" .. id, { proxy = p.url }))
      statuses[id] = r.status
      if r.status == 403 then assert.are.equal("30", r.headers["retry-after"]) end
    end
    assert.are.same({ 200, 200, 403, 403, 403 }, statuses)
    assert.are.equal(3, p:counters().banned)
    assert.are.equal(before + 2, site:counters().requests)
    local plain <close> = testing.proxy("ban_after:0")
    local r = assert(get(site.url .. "/page/1", { proxy = plain.url }))
    assert.are.equal(403, r.status)
    assert.is_nil(r.headers["retry-after"])
  end)

  it("slow:MS answers after the others: ordering, not a stopwatch", function()
    local slow <close> = testing.proxy("slow:1000")   -- far longer than any scheduling delay
    local good <close> = testing.proxy("good")
    local c <close> = http.client{ max = 10 }
    local order = {}
    c:submit({ url = site.url .. "/page/1", proxy = slow.url }, function(r) order[#order + 1] = r and "slow" end)
    c:submit({ url = site.url .. "/page/1", proxy = good.url }, function(r) order[#order + 1] = r and "good" end)
    c:run()
    assert.are.same({ "good", "slow" }, order)
    assert.are.equal(1, slow:counters().requests)
  end)

  it("reset:P resets the connection on the seeded sequence of requests", function()
    local p <close> = testing.proxy{ behaviour = "reset:0.3", seed = 11 }
    local port = p.url:match(":(%d+)$")
    local failed, want = 0, 0
    for k = 1, 40 do
      local data = raw(port, "GET " .. site.url .. "/page/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      if not data then failed = failed + 1 end
      if draws(11, k, 2, 0.3) then want = want + 1 end
    end
    assert.is_true(want > 4 and want < 20, want)   -- about P of them
    assert.are.equal(want, failed)
    assert.are.equal(want, p:counters().reset)
    -- forage.http sends a request broken before any answer once more: it fails when two
    -- draws in a row fault, with kind proxy.
    local all <close> = testing.proxy("reset:1")
    local r, message, kind = get(site.url .. "/page/1", { proxy = all.url })
    assert.is_nil(r)
    assert.are.equal("proxy", kind, message)
    assert.are.equal(2, all:counters().reset)
  end)

  it("flaky:P reads the request and closes without an answer, on the seeded sequence", function()
    local p <close> = testing.proxy{ behaviour = "flaky:0.5", seed = 4 }
    local failed, want, k = 0, 0, 0
    for _ = 1, 20 do
      local r, message, kind = get(site.url .. "/page/2", { proxy = p.url })
      if not r then
        failed = failed + 1
        assert.are.equal("proxy", kind, message)
      end
      k = k + 1
      if draws(4, k, 1, 0.5) then
        k = k + 1
        if draws(4, k, 1, 0.5) then want = want + 1 end
      end
    end
    assert.are.equal(want, failed)
    local counts = p:counters()
    assert.are.equal(k, counts.requests)
    assert.is_true(counts.dropped >= failed * 2)
  end)

  it("auth:USER:PASS answers 407 without the credentials and forwards with them", function()
    local p <close> = testing.proxy("auth:bob:s3cret")
    assert.matches("^http://bob:s3cret@127%.0%.0%.1:%d+$", p.url)
    assert.matches("^http://127%.0%.0%.1:%d+$", p.bare_url)
    local r, message, kind = get(site.url .. "/page/1", { proxy = p.bare_url })
    assert.is_nil(r)
    assert.are.equal("proxy", kind, message)
    local wrong = p.bare_url:gsub("//", "//bob:nope@")
    assert.are.equal("proxy", select(3, get(site.url .. "/page/1", { proxy = wrong })))
    assert.are.equal(200, assert(get(site.url .. "/page/1", { proxy = p.url })).status)
    local data = assert(raw(p.url:match(":(%d+)$"), "GET " .. site.url .. "/ HTTP/1.1\r\nConnection: close\r\n\r\n"))
    assert.matches("^HTTP/1%.1 407", data)
    assert.matches('Proxy%-Authenticate: Basic realm="forage"', data)
  end)

  it("combines behaviours", function()
    local p <close> = testing.proxy("slow:10,ban_after:1:5")
    assert.are.equal(200, assert(get(site.url .. "/page/1", { proxy = p.url })).status)
    local r = assert(get(site.url .. "/page/1", { proxy = p.url }))
    assert.are.equal(403, r.status)
    assert.are.equal("5", r.headers["retry-after"])
  end)

  it("counts requests in flight at once: parallel requests peak at their number, sequential at 1", function()
    -- each answer takes 1 s: far longer than the client needs to send all five
    local slow_site <close> = testing.site{ pages = 1, latency = 1000 }
    local p <close> = testing.proxy("good")
    local c <close> = http.client{ max = 10 }
    local ok = 0
    for id = 1, 5 do
      c:submit({ url = slow_site.url .. "/detail/" .. id, proxy = p.url }, function(r) if r then ok = ok + 1 end end)
    end
    c:run()
    assert.are.equal(5, ok)
    assert.are.equal(5, p:counters().peak_inflight)
    local q <close> = testing.proxy("good")
    for id = 1, 5 do assert(get(site.url .. "/detail/" .. id, { proxy = q.url })) end
    local one <close> = http.client{ max = 1 }
    for id = 1, 5 do one:submit({ url = site.url .. "/detail/" .. id, proxy = q.url }, function() end) end
    one:run()
    assert.are.equal(10, q:counters().requests)
    assert.are.equal(1, q:counters().peak_inflight)
    assert.are.equal(0, q:counters().inflight)
  end)

  it("raises on unknown, malformed or impossible behaviours and options", function()
    local function raises(spec, pattern)
      local ok, err = pcall(testing.proxy, spec)
      assert.is_false(ok)
      assert.matches(pattern, err)
    end
    raises("sloww:5", "forage.testing.proxy: unknown behaviour 'sloww:5' %(known: good, dead, refuse_after:N,")
    raises("", "forage.testing.proxy: behaviour '' is empty")
    raises("slow:abc", "behaviour 'slow:abc' must be slow:MS with MS an integer from 0 to 600000")
    raises("slow:-1", "behaviour 'slow:%-1' must be slow:MS")
    raises("reset:1.5", "behaviour 'reset:1.5' must be reset:P with P a number from 0 to 1")
    raises("flaky", "behaviour 'flaky' must be flaky:P")
    raises("refuse_after:0", "must be refuse_after:N with N an integer from 1")
    raises("ban_after:3:x", "must be ban_after:N or ban_after:N:SECONDS")
    raises("auth:bob", "must be auth:USER:PASS")
    raises("good:1", "behaviour 'good:1' takes no argument")
    raises("slow:5,slow:6", "behaviour 'slow:6' is given twice")
    raises("dead,slow:5", "'dead' cannot be combined")
    raises({ behaviour = "good", speed = 1 }, "forage.testing.proxy: unknown option 'speed' %(known: behaviour, seed%)")
    raises({ seed = 1 }, "forage.testing.proxy: option 'behaviour' must be a string, got nil")
    raises({ behaviour = "good", seed = 1.5 }, "option 'seed' must be an integer, got 1.5")
    assert.has_error(function() testing.proxy(42) end,
      "bad argument #1 to 'proxy' (string or table expected, got number)")
  end)

  it("stops on close, and a forked child's close leaves the parent's proxy running", function()
    local p = testing.proxy("good")
    local child = helpers.reaped(finally, forage.process(function()
      p:close()
      collectgarbage()
      os.exit(0)
    end))
    child:start()
    assert.are.equal(0, helpers.join_or_fail(child, 10))
    assert.are.equal(200, assert(get(site.url .. "/page/1", { proxy = p.url })).status)
    local pid, port = p.pid, tonumber(p.url:match(":(%d+)$"))
    p:close()
    assert.is_false(helpers.exists(pid))
    assert.is_true(refused(port))
    assert.has_error(function() p:counters() end, "attempt to use a closed forage.testing.Proxy")
  end)
end)

describe("forage.testing.proxies", function()
  it("starts a list of proxies in order, each its own process, and closes them all", function()
    local site <close> = testing.site{ pages = 1 }
    local set = testing.proxies{ "good", "good", "dead", "ban_after:5", { behaviour = "slow:1", seed = 9 } }
    assert.are.equal(5, #set)
    local urls = set:urls()
    assert.are.equal(5, #urls)
    for i = 1, 5 do assert.are.equal(set[i].url, urls[i]) end
    assert.are.equal("ban_after:5", set[4].behaviour)
    assert.are.equal("slow:1", set[5].behaviour)
    assert.are_not.equal(set[1].pid, set[2].pid)
    assert.are.equal(200, assert(get(site.url .. "/page/1", { proxy = urls[2] })).status)
    local pids = { set[1].pid, set[2].pid, set[4].pid }
    do
      local scoped <close> = set   -- luacheck: ignore 211 (the close is the point)
    end
    for _, pid in ipairs(pids) do assert.is_false(helpers.exists(pid)) end
  end)

  it("raises naming a bad entry, and stops the proxies already started", function()
    local ok, err = pcall(testing.proxies, { "good", "nope" })
    assert.is_false(ok)
    assert.matches("unknown behaviour 'nope'", err)
    assert.is_nil(err:find("testing.lua", 1, true))
    ok, err = pcall(testing.proxies, { "good", 5 })
    assert.is_false(ok)
    assert.matches("forage.testing.proxies: entry 2 must be a string or a table, got number", err)
  end)
end)
