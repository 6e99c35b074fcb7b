-- forage.http against real local servers (spec/fixtures.lua): nginx, tinyproxy, a stalled socket.
local http = require("forage.web").http
local fixtures = require "fixtures"

describe("forage.http", function()
  local fx = {}

  setup(function()
    fixtures.start(fx)
  end)

  teardown(function()
    fixtures.stop(fx)
  end)

  -- A failure is nil, message, kind, and an error object with the same three facts.
  local function fails(kind, res, message, got_kind, err)
    assert.is_nil(res)
    assert.is_string(message)
    assert.are.equal(kind, got_kind, message)
    assert.is_table(err)
    assert.are.equal(kind, err.kind)
    assert.is_string(err.message)
    assert.are.equal(message, tostring(err))
    return err, message
  end

  describe("request and get", function()
    it("fetches a page with its status, headers, body and final url", function()
      local r = assert(http.get(fx.base .. "/page.txt"))
      assert.are.equal(200, r.status)
      assert.are.equal(fx.page, r.body)
      assert.are.equal(fx.base .. "/page.txt", r.url)
      assert.are.equal("text/plain", r.headers["content-type"])
      assert.are.equal(0, r.redirects)
      assert.is_number(r.elapsed)
      assert.is_nil(r.proxy)
    end)

    it("joins repeated headers with ', '", function()
      local r = assert(http.request { url = fx.base .. "/headers" })
      assert.are.equal("a, b", r.headers["x-twice"])
    end)

    it("returns a 404 as a response, not an error", function()
      local r = assert(http.get(fx.base .. "/missing"))
      assert.are.equal(404, r.status)
    end)

    it("follows and counts redirects", function()
      local r = assert(http.get(fx.base .. "/redirect2"))
      assert.are.equal(200, r.status)
      assert.are.equal(2, r.redirects)
      assert.are.equal(fx.base .. "/page.txt", r.url)
    end)

    it("does not follow with follow = 0", function()
      local r = assert(http.get(fx.base .. "/redirect", { follow = 0 }))
      assert.are.equal(302, r.status)
      assert.are.equal(fx.base .. "/page.txt", r.headers.location)
    end)

    it("stops a redirect loop: too_many_redirects", function()
      fails("too_many_redirects", http.get(fx.base .. "/loop", { follow = 3 }))
    end)

    it("decodes gzip", function()
      local r = assert(http.get(fx.base .. "/page.txt"))
      assert.are.equal("gzip", r.headers["content-encoding"])
      assert.are.equal(fx.page, r.body)
    end)

    it("sends headers (map and list), a body and cookies", function()
      local r = assert(http.request { url = fx.base .. "/echocookie", headers = { ["X-A"] = "1" },
                                      cookies = "k=v" })
      assert.are.equal("cookie=k=v", r.body)
      r = assert(http.request { url = fx.base .. "/setcookie", headers = { "X-B: 2" }, cookies = true })
      assert.are.equal("cookie=seen=1", r.body)
      r = assert(http.request { url = fx.base .. "/headers", method = "POST", body = "x=1" })
      assert.are.equal(200, r.status)
    end)

    it("raises on bad options", function()
      assert.has_error(function() http.request {} end, "forage.http.request: option 'url' is required")
      assert.has_error(function() http.request { url = fx.base, timeout = "soon" } end)
      assert.has_error(function() http.request { url = fx.base, headers = { "X: a\r\nY: b" } } end)
    end)

    it("raises on an unknown option, naming it and the function, before any request", function()
      local function raises(pattern, f, ...)
        local args = table.pack(...)
        local ok, err = pcall(function() return f(table.unpack(args, 1, args.n)) end)
        assert.is_false(ok)
        assert.matches(pattern, err)
        assert.matches("^[^:]*http_spec%.lua:%d+: ", err)   -- the caller's line
      end
      raises("forage%.http%.get: unknown option 'proxies' %(known: .*proxy", http.get, fx.base .. "/page.txt",
        { proxies = fx.proxy })
      raises("forage%.http%.get: unknown option 'timout'", http.get, fx.base .. "/page.txt", { timout = 1 })
      raises("forage%.http%.request: unknown option 'proxi'", http.request, { url = fx.base, proxi = fx.proxy })
      raises("forage%.http%.client: unknown option 'maxx' %(known: max%)", http.client, { maxx = 1 })
      local c <close> = http.client()
      raises("forage%.http%.Client:submit: unknown option 'proxies'", c.submit, c,
        { url = fx.base, proxies = fx.proxy }, function() end)
      assert.are.equal(0, c:pending())
    end)

    it("raises on arguments of the wrong type", function()
      assert.has_error(function() http.get(42) end, "bad argument #1 to 'get' (string expected, got number)")
      assert.has_error(function() http.get(fx.base, "x") end, "bad argument #2 to 'get' (table expected, got string)")
      assert.has_error(function() http.request(fx.base) end)
      assert.has_error(function() http.client(5) end)
    end)

    it("takes timeouts as everywhere in forage: NaN and negatives raise, huge means none", function()
      assert.has_error(function() http.get(fx.base, { timeout = 0 / 0 }) end)
      assert.has_error(function() http.get(fx.base, { timeout = -1 }) end)
      assert.has_error(function() http.get(fx.base, { connect_timeout = 0 / 0 }) end)
      assert.has_error(function() http.get(fx.base, { max_bytes = 0 / 0 }) end)
      assert.has_error(function() http.get(fx.base, { max_bytes = -1 }) end)
      assert.has_error(function() http.get(fx.base, { follow = 1.5 }) end)
      assert.are.equal(200, assert(http.get(fx.base .. "/page.txt", { timeout = 1e300 })).status)
      assert.are.equal(200, assert(http.get(fx.base .. "/page.txt", { timeout = math.huge,
        connect_timeout = math.huge, max_bytes = math.huge })).status)
      -- 0 allows no time at all: a server that never answers fails at once
      fails("timeout", http.get("http://127.0.0.1:" .. fx.stall_port .. "/", { timeout = 0 }))
    end)

    it("refuses line breaks and NUL bytes in every part of the request (no request splitting)", function()
      local u = fx.base .. "/echocookie"
      local injections = {
        { method = "GET / HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET" }, { method = "GET\0" },
        { cookies = "a=1\r\nX-Evil: 1" }, { cookies = "a=1\0b" }, { cookies = "a=1\nX-Evil: 1" },
        { headers = { ["X-A"] = "1\r\nX-Evil: 1" } }, { headers = { ["X-A\r\nX-Evil"] = "1" } },
        { headers = { "X-A: 1\0" } }, { user_agent = "ua\r\nX-Evil: 1" },
        { proxy = "http://127.0.0.1:" .. fx.proxy_port .. "\r\nX-Evil: 1" }, { cainfo = fx.cert .. "\0x" },
      }
      for _, opts in ipairs(injections) do
        local ok, err = pcall(http.get, u, opts)
        assert.is_false(ok, next(opts))
        assert.matches("forage%.http%.get: ", err)
      end
      -- a URL from a page is an outcome, not a misuse: the request is not sent
      for _, bad in ipairs { u .. "\r\nX-Evil: 1", u .. "\0/other" } do
        local _, message = fails("http", http.get(bad))
        assert.matches("line break or a NUL", message)
      end
    end)

    it("sends a user agent of the caller's choice, forage by default", function()
      local r = assert(http.get(fx.base .. "/echoua", { user_agent = "forage-spec/1" }))
      assert.are.equal("ua=forage-spec/1", r.body)
      assert.are.equal("ua=forage", assert(http.get(fx.base .. "/echoua")).body)
    end)

    it("caps the decoded size: too_large", function()
      local _, message = fails("too_large", http.get(fx.base .. "/big.bin"))   -- 50 MiB, default cap 10 MiB
      assert.matches("max_bytes", message)
      fails("too_large", http.get(fx.base .. "/page.txt", { max_bytes = 100 }))
    end)

    it("times out on a server that never answers", function()
      local t = os.time()
      fails("timeout", http.get("http://127.0.0.1:" .. fx.stall_port .. "/", { timeout = 0.5 }))
      assert.is_true(os.time() - t < 5)
    end)

    it("reports a refused connection: connect", function()
      fails("connect", http.get("http://127.0.0.1:" .. fx.dead_port .. "/"))
    end)

    it("reports an unresolvable host: dns, without asking any server", function()
      -- a 64-byte label cannot be put in a DNS query: glibc fails it before sending anything
      fails("dns", http.get("http://" .. ("a"):rep(64) .. ".invalid/"))
    end)

    it("refuses file:// and a redirect to it", function()
      local _, message = fails("http", http.get("file:///etc/passwd"))
      assert.matches("file", message)
      fails("http", http.get(fx.base .. "/tofile"))
    end)

    it("has messages that say the kind and the URL, cut to 60 bytes", function()
      local _, message = fails("connect", http.get("http://127.0.0.1:" .. fx.dead_port .. "/x"))
      assert.matches("^connect: .*%('http://127%.0%.0%.1:%d+/x'%)$", message)
      local long = "http://127.0.0.1:" .. fx.dead_port .. "/" .. ("x"):rep(1024 * 1024)
      local err
      err, message = fails("connect", http.get(long))
      assert.is_true(#message < 400, #message)
      assert.are.equal(long, err.url)
      _, message = fails("http", http.get(long:rep(10)))   -- more than curl takes: not sent
      assert.is_true(#message < 400, #message)
    end)

    it("never shows a password given in the URL: not in r.url, not in an error", function()
      local r = assert(http.get("http://bob:s3cret@127.0.0.1:" .. fx.http_port .. "/page.txt"))
      assert.are.equal("http://bob:***@127.0.0.1:" .. fx.http_port .. "/page.txt", r.url)
      local _, message = fails("connect", http.get("http://bob:s3cret@127.0.0.1:" .. fx.dead_port .. "/"))
      assert.is_nil(message:find("s3cret", 1, true))
      _, message = http.get("http://bob:s3cr/et@127.0.0.1:" .. fx.dead_port .. "/")
      assert.is_nil(message:find("s3cr", 1, true), message)
    end)
  end)

  it("sends a request again, once, when the connection dies before any answer", function()
    local forage, socket = require "forage", require "socket"
    local server = assert(socket.bind("127.0.0.1", 0))
    local port = select(2, server:getsockname())
    local p = forage.process(function()
      -- the first connection is closed unanswered, the second answered
      for n = 1, 2 do
        local conn = server:accept()
        repeat local line = conn:receive("*l") until line == "" or line == nil
        if n == 2 then conn:send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok") end
        conn:close()
      end
    end)
    p:start()
    local r, err = http.get("http://127.0.0.1:" .. port .. "/", { timeout = 5 })
    server:close()
    p:join(5)
    assert.is_nil(err)
    assert.are.equal("ok", r.body)
  end)

  describe("TLS", function()
    it("verifies by default: a self-signed certificate fails with tls", function()
      fails("tls", http.get(fx.tls .. "/page.txt"))
    end)

    it("accepts it with insecure = true or with cainfo", function()
      assert.are.equal(fx.page, assert(http.get(fx.tls .. "/page.txt", { insecure = true })).body)
      assert.are.equal(fx.page, assert(http.get(fx.tls .. "/page.txt", { cainfo = fx.cert })).body)
    end)
  end)

  describe("proxies", function()
    it("fetches http through tinyproxy, many times (its closes never lose a request)", function()
      for _ = 1, 20 do
        local r = assert(http.get(fx.base .. "/redirect", { proxy = fx.proxy }))
        assert.are.equal(200, r.status)
        assert.are.equal(fx.page, r.body)
        assert.are.equal(fx.proxy, r.proxy)
      end
    end)

    it("fetches https through CONNECT", function()
      local r = assert(http.get(fx.tls .. "/page.txt", { proxy = fx.proxy, cainfo = fx.cert }))
      assert.are.equal(fx.page, r.body)
    end)

    it("masks credentials in the response", function()
      local p = "http://user:pass@127.0.0.1:" .. fx.authproxy_port
      local r = assert(http.get(fx.base .. "/page.txt", { proxy = p }))
      assert.are.equal(200, r.status)
      assert.are.equal("http://user:***@127.0.0.1:" .. fx.authproxy_port, r.proxy)
    end)

    it("reports 407 as a proxy error, http and https, without the credentials", function()
      local p = "http://user:s3cret@127.0.0.1:" .. fx.authproxy_port
      local _, message = fails("proxy", http.get(fx.base .. "/page.txt", { proxy = p }))
      assert.is_nil(message:find("s3cret", 1, true))
      _, message = fails("proxy", http.get(fx.tls .. "/page.txt", { proxy = p, insecure = true }))
      assert.is_nil(message:find("s3cret", 1, true))
      fails("proxy", http.get(fx.base .. "/page.txt", { proxy = "http://127.0.0.1:" .. fx.authproxy_port }))
    end)

    it("never shows a proxy password, even one holding '/', '#', '?', '@' or an escape", function()
      for _, secret in ipairs { "s3cr/t", "s3c#et", "s3c?et", "s3c@et", "s3%2Fcret", "s3cret" } do
        for _, port in ipairs { fx.dead_port, fx.authproxy_port } do
          local p = "http://user:" .. secret .. "@127.0.0.1:" .. port
          local r, message, kind, err = http.get(fx.base .. "/page.txt", { proxy = p })
          local shown = r and (tostring(r.proxy) .. r.url)
            or (message .. kind .. tostring(err) .. err.message .. err.url)
          assert.is_nil(shown:find(secret, 1, true), shown)
          assert.is_nil(shown:find("s3c", 1, true), shown)
          assert.is_nil(shown:find("cr/t", 1, true), shown)
        end
      end
    end)

    it("reports a dead or unresolvable proxy as proxy", function()
      local dead = "http://u:s3cret@127.0.0.1:" .. fx.dead_port
      local _, message = fails("proxy", http.get(fx.base .. "/page.txt", { proxy = dead }))
      assert.is_nil(message:find("s3cret", 1, true))
      fails("proxy", http.get(fx.tls .. "/page.txt", { proxy = dead }))
      fails("proxy", http.get(fx.base .. "/", { proxy = "socks5h://127.0.0.1:" .. fx.dead_port }))
      fails("proxy", http.get(fx.base .. "/", { proxy = "http://" .. ("a"):rep(64) .. ".invalid:8080" }))
    end)

    it("reports a proxy that closes during CONNECT or answers garbage as proxy", function()
      for _, answer in ipairs { false, "garbage\r\n\r\n", "HTTP/1.1 200\r\nnot a header\r\n" } do
        local port, stop = fixtures.serve(answer or nil)
        local proxy = "http://127.0.0.1:" .. port
        local ok, err = pcall(function()
          fails("proxy", http.get(fx.tls .. "/page.txt", { proxy = proxy, insecure = true, timeout = 20 }))
          if answer ~= "HTTP/1.1 200\r\nnot a header\r\n" then
            -- a plain HTTP request through it: the connection is the proxy's
            fails("proxy", http.get(fx.base .. "/page.txt", { proxy = proxy, timeout = 20 }))
          end
        end)
        stop()
        assert(ok, err)
      end
    end)
  end)

  describe("client", function()
    it("runs 50 concurrent requests, direct and through the proxy", function()
      local c <close> = http.client { max = 20 }
      local ok, failed = 0, {}
      for i = 1, 50 do
        local opts = { url = fx.base .. "/page.txt?i=" .. i, proxy = i % 2 == 0 and fx.proxy or nil }
        c:submit(opts, function(r, message)
          if r and r.status == 200 and r.body == fx.page then ok = ok + 1 else failed[#failed + 1] = message end
        end)
      end
      assert.are.equal(50, c:pending())
      c:run()
      assert.are.same({}, failed)
      assert.are.equal(50, ok)
      assert.are.equal(0, c:pending())
    end)

    it("step(timeout, fd) also wakes for a descriptor, with or without transfers", function()
      local forage = require "forage"
      local c <close> = http.client()
      local a, b = forage.pipe()
      local pending, readable = c:step(0, a:fileno())
      assert.are.equal(0, pending)
      assert.is_false(readable)
      b:send("wake")
      pending, readable = c:step(30, a:fileno())      -- no transfer: returns for the fd alone
      assert.are.equal(0, pending)
      assert.is_true(readable)
      assert.are.equal("wake", a:recv(0))
      local got
      c:submit({ url = fx.base .. "/page.txt" }, function(r) got = r.status end)
      while not got do c:step(30, a:fileno()) end
      assert.are.equal(200, got)
      assert.has_error(function() c:step(0, -1) end)
      a:close()
      b:close()
    end)

    it("passes failures to callbacks as nil, message, kind, err and lets them submit more", function()
      local c <close> = http.client()
      local seen = {}
      c:submit({ url = "http://127.0.0.1:" .. fx.dead_port .. "/" }, function(r, message, kind, err)
        assert.is_nil(r)
        assert.matches("^connect: ", message)
        assert.are.equal(message, tostring(err))
        seen[#seen + 1] = kind
        c:submit({ url = fx.base .. "/missing" }, function(res) seen[#seen + 1] = res.status end)
      end)
      c:run()
      assert.are.same({ "connect", 404 }, seen)
    end)

    it("re-raises a callback's error after the round, and finishes the others", function()
      local c <close> = http.client()
      local done = 0
      c:submit({ url = fx.base .. "/page.txt" }, function() error("boom") end)
      c:submit({ url = fx.base .. "/page.txt" }, function() done = done + 1 end)
      assert.has_error(function() c:run() end)
      c:run()
      assert.are.equal(1, done)
      assert.are.equal(0, c:pending())
    end)

    it("refuses a client in a forked child, where http.get still works", function()
      local forage = require "forage"
      local c <close> = http.client()
      local path = os.tmpname()
      local p = forage.process(function()
        local ok, err = pcall(c.pending, c)
        local r = http.get(fx.base .. "/page.txt")
        local f = assert(io.open(path, "w"))
        f:write(tostring(ok), "|", tostring(err), "|", tostring(r and r.status))
        f:close()
      end)
      p:start()
      assert.are.equal(0, p:join(10))
      local f = assert(io.open(path))
      local text = f:read("a")
      f:close()
      os.remove(path)
      assert.matches("^false|.*other than the one that made it|200$", text)
      c:submit({ url = fx.base .. "/page.txt" }, function(r) assert.are.equal(200, r.status) end)
      c:run()
    end)

    it("steps with a timeout and closes with transfers in flight", function()
      local c = http.client()
      c:submit({ url = "http://127.0.0.1:" .. fx.stall_port .. "/", timeout = 5 }, function() end)
      assert.are.equal(1, c:step(0.05))
      c:close()
      c:close()
      assert.has_error(function() c:pending() end, "attempt to use a closed forage.http.Client")
      assert.has_error(function() http.client():step(0 / 0) end)
      assert.has_error(function() http.client():step(-1) end)
    end)
  end)
end)
