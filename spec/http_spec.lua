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

  local function fails(kind, res, err)
    assert.is_nil(res)
    assert.is_table(err)
    assert.are.equal(kind, err.kind, tostring(err))
    assert.is_string(err.message)
    return err
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
      assert.has_error(function() http.request {} end)
      assert.has_error(function() http.request { url = fx.base, timeout = "soon" } end)
      assert.has_error(function() http.request { url = fx.base, headers = { "X: a\r\nY: b" } } end)
    end)

    it("caps the decoded size: too_large", function()
      local err = fails("too_large", http.get(fx.base .. "/big.bin"))   -- 50 MiB, default cap 10 MiB
      assert.matches("max_bytes", err.message)
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
      local err = fails("http", http.get("file:///etc/passwd"))
      assert.matches("file", err.message)
      fails("http", http.get(fx.base .. "/tofile"))
    end)

    it("has error objects that print", function()
      local _, err = http.get("http://127.0.0.1:" .. fx.dead_port .. "/x")
      assert.matches("^connect: .*%(http://127%.0%.0%.1:%d+/x%)$", tostring(err))
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
      local err = fails("proxy", http.get(fx.base .. "/page.txt", { proxy = p }))
      assert.is_nil(tostring(err):find("s3cret", 1, true))
      err = fails("proxy", http.get(fx.tls .. "/page.txt", { proxy = p, insecure = true }))
      assert.is_nil(tostring(err):find("s3cret", 1, true))
      fails("proxy", http.get(fx.base .. "/page.txt", { proxy = "http://127.0.0.1:" .. fx.authproxy_port }))
    end)

    it("reports a dead or unresolvable proxy as proxy", function()
      local dead = "http://u:s3cret@127.0.0.1:" .. fx.dead_port
      local err = fails("proxy", http.get(fx.base .. "/page.txt", { proxy = dead }))
      assert.is_nil(tostring(err):find("s3cret", 1, true))
      fails("proxy", http.get(fx.tls .. "/page.txt", { proxy = dead }))
      fails("proxy", http.get(fx.base .. "/", { proxy = "socks5h://127.0.0.1:" .. fx.dead_port }))
      fails("proxy", http.get(fx.base .. "/", { proxy = "http://" .. ("a"):rep(64) .. ".invalid:8080" }))
    end)
  end)

  describe("client", function()
    it("runs 50 concurrent requests, direct and through the proxy", function()
      local c <close> = http.client { max = 20 }
      local ok, failed = 0, {}
      for i = 1, 50 do
        local opts = { url = fx.base .. "/page.txt?i=" .. i, proxy = i % 2 == 0 and fx.proxy or nil }
        c:submit(opts, function(r, err)
          if r and r.status == 200 and r.body == fx.page then ok = ok + 1 else failed[#failed + 1] = tostring(err) end
        end)
      end
      assert.are.equal(50, c:pending())
      c:run()
      assert.are.same({}, failed)
      assert.are.equal(50, ok)
      assert.are.equal(0, c:pending())
    end)

    it("passes errors to callbacks and lets them submit more", function()
      local c <close> = http.client()
      local seen = {}
      c:submit({ url = "http://127.0.0.1:" .. fx.dead_port .. "/" }, function(_, err)
        seen[#seen + 1] = err.kind
        c:submit({ url = fx.base .. "/missing" }, function(r) seen[#seen + 1] = r.status end)
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
      assert.has_error(function() c:pending() end, "attempt to use a closed http client")
    end)
  end)
end)
