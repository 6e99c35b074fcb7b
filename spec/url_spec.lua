-- forage.url: parse, join (RFC 3986 section 5.4), canonical, fingerprint, on curl's URL API.
local url = require("forage.web").url

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

describe("url.parse", function()
  it("returns every component", function()
    local p = assert(url.parse("https://alice:s3cret@Example.COM:8443/a/b;c?x=1&y=2#frag"))
    assert.same({
      scheme = "https", user = "alice", password = "s3cret", host = "Example.COM", port = 8443,
      path = "/a/b;c", query = "x=1&y=2", fragment = "frag",
    }, p)
    assert.equal("integer", math.type(p.port))
  end)

  it("leaves absent parts nil", function()
    local p = assert(url.parse("http://example.com"))
    assert.same({ scheme = "http", host = "example.com", path = "/" }, p)
  end)

  it("gives the IPv6 zone apart", function()
    local p = assert(url.parse("http://[fe80::1%25eth0]:8080/"))
    assert.equal("[fe80::1]", p.host)
    assert.equal("eth0", p.zoneid)
    assert.equal(8080, p.port)
  end)

  it("accepts schemes curl does not speak", function()
    local p = assert(url.parse("foo://x/y"))
    assert.equal("foo", p.scheme)
    assert.equal("x", p.host)
  end)

  it("returns nil, curl's reason and malformed for bad input", function()
    local bad = { "http://[::1", "", "not a url", "http://a:99999/", "http://a/b c" }
    for _, u in ipairs(bad) do
      local p, err, kind = url.parse(u)
      assert.is_nil(p)
      assert.equal("malformed", kind)
      assert.matches("^bad url: .+ %('" .. u:gsub("%p", "%%%0") .. "'%)$", err)
    end
    assert.equal("bad url: Bad IPv6 address ('http://[::1')", select(2, url.parse("http://[::1")))
  end)

  it("refuses an embedded NUL", function()
    local p, err, kind = url.parse("http://a/\0b")
    assert.is_nil(p)
    assert.matches("NUL", err)
    assert.equal("malformed", kind)
  end)

  it("raises for a non-string, naming the argument", function()
    assert.has_error(function() url.parse({}) end, "bad argument #1 to 'parse' (string expected, got table)")
    assert.has_error(function() url.parse(42) end, "bad argument #1 to 'parse' (string expected, got number)")
    assert.has_error(function() url.parse() end)
    assert.has_error(function() url.join("http://a/", 42) end,
      "bad argument #2 to 'join' (string expected, got number)")
    assert.has_error(function() url.canonical(42) end)
  end)

  it("never repeats a password or more than 60 bytes of the input in its error", function()
    for _, u in ipairs { "http://bob:s3cret@[::1/x", "http://bob:s3cr/et@h:99999/", "http://bob:s3c#et@[/" } do
      local p, err = url.parse(u)
      assert.is_nil(p)
      assert.is_nil(err:find("s3c", 1, true), err)
      assert.is_nil(select(2, url.canonical(u)):find("s3c", 1, true))
      assert.is_nil(select(2, url.join(u, "x")):find("s3c", 1, true))
    end
    local huge = "http://[" .. ("x"):rep(10 * 1024 * 1024)
    local p, err = url.parse(huge)
    assert.is_nil(p)
    assert.is_true(#err < 200, #err)
  end)
end)

describe("url.join", function()
  local base = "http://a/b/c/d;p?q"

  -- RFC 3986 section 5.4. curl writes an empty path as "/" ("//g" gives "http://g/").
  local normal = {
    ["g"] = "http://a/b/c/g", ["./g"] = "http://a/b/c/g", ["g/"] = "http://a/b/c/g/",
    ["/g"] = "http://a/g", ["//g"] = "http://g/", ["?y"] = "http://a/b/c/d;p?y",
    ["g?y"] = "http://a/b/c/g?y", ["#s"] = "http://a/b/c/d;p?q#s", ["g#s"] = "http://a/b/c/g#s",
    ["g?y#s"] = "http://a/b/c/g?y#s", [";x"] = "http://a/b/c/;x", ["g;x"] = "http://a/b/c/g;x",
    ["g;x?y#s"] = "http://a/b/c/g;x?y#s", [""] = "http://a/b/c/d;p?q", ["."] = "http://a/b/c/",
    ["./"] = "http://a/b/c/", [".."] = "http://a/b/", ["../"] = "http://a/b/", ["../g"] = "http://a/b/g",
    ["../.."] = "http://a/", ["../../"] = "http://a/", ["../../g"] = "http://a/g",
  }
  local abnormal = {
    ["../../../g"] = "http://a/g", ["../../../../g"] = "http://a/g", ["/./g"] = "http://a/g",
    ["/../g"] = "http://a/g", ["g."] = "http://a/b/c/g.", [".g"] = "http://a/b/c/.g",
    ["g.."] = "http://a/b/c/g..", ["..g"] = "http://a/b/c/..g", ["./../g"] = "http://a/b/g",
    ["./g/."] = "http://a/b/c/g/", ["g/./h"] = "http://a/b/c/g/h", ["g/../h"] = "http://a/b/c/h",
    ["g;x=1/./y"] = "http://a/b/c/g;x=1/y", ["g;x=1/../y"] = "http://a/b/c/y",
    ["g?y/./x"] = "http://a/b/c/g?y/./x", ["g?y/../x"] = "http://a/b/c/g?y/../x",
    ["g#s/./x"] = "http://a/b/c/g#s/./x", ["g#s/../x"] = "http://a/b/c/g#s/../x",
    ["http:g"] = "http://a/b/c/g",   -- the backward-compatible reading
  }

  for href, want in pairs(normal) do
    it("resolves the normal example '" .. href .. "'", function()
      assert.equal(want, url.join(base, href))
    end)
  end
  for href, want in pairs(abnormal) do
    it("resolves the abnormal example '" .. href .. "'", function()
      assert.equal(want, url.join(base, href))
    end)
  end

  it("takes an absolute href as it is", function()
    assert.equal("https://other.example/x?y#z", url.join(base, "https://other.example/x?y#z"))
  end)

  it("cannot give 'g:h' (curl's URL API holds only scheme://... URLs)", function()
    local r, err = url.join(base, "g:h")
    assert.is_nil(r)
    assert.matches("^bad url: .*%('g:h'%)$", err)
  end)

  it("names the bad side in its error", function()
    local r, err, kind = url.join("http://[::1", "g")
    assert.is_nil(r)
    assert.equal("bad url: Bad IPv6 address ('http://[::1')", err)
    assert.equal("malformed", kind)
    r, err = url.join("http://a/", "http://[::1")
    assert.is_nil(r)
    assert.equal("bad url: Bad IPv6 address ('http://[::1')", err)
  end)

  it("raises for a non-string, naming the argument", function()
    assert.has_error(function() url.join("http://a/", nil) end,
      "bad argument #2 to 'join' (string expected, got nil)")
  end)
end)

describe("url.canonical", function()
  local c = url.canonical

  it("lower-cases scheme and host, not the rest", function()
    assert.equal("http://example.com/A/B?X=Y", c("HTTP://ExAmPlE.CoM/A/B?X=Y"))
    assert.equal("http://Bob:PW@example.com/", c("http://Bob:PW@EXAMPLE.com/"))
  end)

  it("drops default ports only", function()
    assert.equal("http://a/", c("http://a:80/"))
    assert.equal("https://a/", c("https://a:443/"))
    assert.equal("http://a:443/", c("http://a:443/"))
    assert.equal("https://a:80/", c("https://a:80/"))
    assert.equal("http://a:8080/", c("http://a:8080/"))
  end)

  it("drops the fragment unless asked to keep it", function()
    assert.equal("http://a/p", c("http://a/p#top"))
    assert.equal("http://a/p#top", c("http://a/p#top", { keep_fragment = true }))
  end)

  it("resolves dot segments", function()
    assert.equal("http://a/b/d", c("http://a/b/./c/../d"))
    assert.equal("http://a/x", c("http://a/../../x"))
  end)

  it("normalises percent-encoding", function()
    assert.equal("http://a/A~-_z", c("http://a/%41%7e%2D%5f%7A"))
    assert.equal("http://a/%2F%3A?q=%E2%82%AC", c("http://a/%2f%3a?q=%e2%82%ac"))
    assert.equal("http://a/%C3%A9", c("http://a/\xC3\xA9"))   -- raw UTF-8 is encoded
    assert.equal(c("http://a/%C3%A9"), c("http://a/%c3%a9"))
    assert.equal("http://a/%25zz%25e8", c("http://a/%zz%e%38"))   -- a stray '%' is encoded
    assert.equal("http://a/%2E/x/?q=.", c("http://a/%2e/x/?q=%2E"))   -- no new dot segment
  end)

  it("sorts query parameters by name then value, stably", function()
    assert.equal("http://a/?a=1&a=2&b=&b=0&c", c("http://a/?c&b=0&a=2&b=&a=1"))
    assert.equal("http://a/?b=2&a=1", c("http://a/?b=2&a=1", { sort_query = false }))
  end)

  it("removes utm_* parameters by default", function()
    assert.equal("http://a/?id=7", c("http://a/?utm_source=x&id=7&utm_medium=y"))
    assert.equal("http://a/?utm=1", c("http://a/?utm=1"))
  end)

  it("takes a custom drop list with exact names and prefixes", function()
    local opts = { drop = { "gclid", "fb*" } }
    assert.equal("http://a/?gclidx=1&utm_source=x",
      c("http://a/?gclid=1&utm_source=x&fbclid=2&gclidx=1&fb&fbx=", opts))
    assert.equal("http://a/?b=1&utm_x=2", c("http://a/?utm_x=2&b=1", { drop = {} }))
  end)

  it("leaves no '?' when the query empties", function()
    assert.equal("http://a/p", c("http://a/p?utm_source=x&utm_medium=y"))
    assert.equal("http://a/p", c("http://a/p?"))
    assert.equal("http://a/p", c("http://a/p?&&"))
  end)

  it("keeps other schemes, lower-cased, and IPv6 zones", function()
    assert.equal("foo://x/y", c("FOO://X/y"))
    assert.equal("file:///etc/hosts", c("file:///etc/hosts"))
    assert.equal("http://[fe80::1%25eth0]:8080/", c("http://[FE80::1%25eth0]:8080/"))
  end)

  it("is a fixed point", function()
    for _, u in ipairs({ "HTTP://U:P@A.b:80/x/../%7e%zz?b=%2f&a=%41#f", "https://h/?q=a+b&q=a%20b" }) do
      local once = c(u)
      assert.equal(once, c(once))
    end
  end)

  it("returns nil, err for bad input and raises for bad arguments", function()
    local r, err, kind = c("http://[::1")
    assert.is_nil(r)
    assert.equal("bad url: Bad IPv6 address ('http://[::1')", err)
    assert.equal("malformed", kind)
    assert.has_error(function() c({}) end)
    local ok, msg = pcall(url.canonical, "http://a/", "no")
    assert.is_false(ok)
    assert.matches("bad argument #2 to '[^']+' %(table expected, got string%)", msg)
    assert.has_error(function() c("http://a/", { drop = "utm_*" }) end)
    assert.has_error(function() c("http://a/", { drop = { 1 } }) end)
    assert.has_error(function() c("http://a/", { keep_fragment = 1 }) end,
      "forage.url.canonical: option 'keep_fragment' must be a boolean, got 1")
  end)

  it("raises on an unknown option, naming it and the function", function()
    assert.has_error(function() c("http://a/", { keep_fragments = true }) end,
      "forage.url.canonical: unknown option 'keep_fragments' (known: drop, keep_fragment, sort_query)")
    assert.has_error(function() url.fingerprint("http://a/", { sort = false }) end,
      "forage.url.fingerprint: unknown option 'sort' (known: drop, keep_fragment, sort_query)")
  end)
end)

describe("url.fingerprint", function()
  local f = url.fingerprint

  it("is 16 bytes", function()
    assert.equal(16, #f("http://example.com/"))
  end)

  it("is SipHash-2-4-128 of the canonical form (pinned)", function()
    assert.equal("a1219c3c8be32b68a4aa09ce5a16c088", hex(f("http://example.com/")))
    -- canonical forms of every length mod 8, so every tail of the hash is pinned
    -- (the values of the hand-written SipHash forage had before hash.c: unchanged)
    local pinned = {
      ["http://a/"] = "12482ed0e55e2fd058d994d04d814bcb",
      ["http://a/b"] = "7f5c944b0009767b8b1ad3c6c5eb24b0",
      ["http://a/bc"] = "a3a93b5d84332f97052b47e1a377a99b",
      ["http://a/bcd"] = "8f88a2479a88cc7aff14c82e2e567f86",
      ["http://a/bcde"] = "294db76e8f7e5fac5d9e54dd8cfb08a6",
      ["http://a/bcdef"] = "5068b5501391734244b000ac4f489a63",
      ["http://a/bcdefg"] = "f56ea43d37fd5cca75688934ff20246f",
      ["http://a/bcdefgh"] = "fd8ebd78f55a75b8d6f81d8c204e2e64",
      ["http://example.com/a/long/path?q=1&r=2"] = "b6d2eee1c612398c9b2a49b223d63bf2",
    }
    for u, want in pairs(pinned) do assert.equal(want, hex(f(u)), u) end
  end)

  it("is equal for equal canonical forms", function()
    assert.equal(f("http://example.com/"), f("HTTP://EXAMPLE.com:80/./#top"))
    assert.equal(f("http://a/?b=1&a=2"), f("http://a/?a=2&utm_source=x&b=1"))
    assert.equal(f("http://a/%7e"), f("http://a/~"))
  end)

  it("differs for different canonical forms", function()
    local seen = {}
    for i = 1, 2000 do
      local fp = f("http://example.com/page/" .. i)
      assert.is_nil(seen[fp])
      seen[fp] = true
    end
    assert.are_not.equal(f("http://a/x"), f("https://a/x"))
    assert.are_not.equal(f("http://a/p#x"), f("http://a/p#y", { keep_fragment = true }))
  end)

  it("follows the options", function()
    assert.are_not.equal(f("http://a/?b=1&a=2"), f("http://a/?b=1&a=2", { sort_query = false }))
  end)

  it("returns nil, err, malformed for bad input", function()
    local r, err, kind = f("not a url")
    assert.is_nil(r)
    assert.equal("bad url: Bad scheme ('not a url')", err)
    assert.equal("malformed", kind)
  end)
end)

describe("url on random bytes", function()
  it("never raises or crashes", function()
    local rng_state = 12345
    local function rand(n)   -- a small LCG: the same bytes on every run
      rng_state = (rng_state * 1103515245 + 12345) % 2147483648
      return rng_state % n
    end
    local prefixes = { "", "http://", "https://a/", "HTTP://[", "file:", "x://h:" }
    for _ = 1, 3000 do
      local bytes = {}
      for j = 1, rand(64) do bytes[j] = string.char(rand(256)) end
      local u = prefixes[rand(#prefixes) + 1] .. table.concat(bytes)
      local p = url.parse(u)
      local cu = url.canonical(u, { keep_fragment = rand(2) == 1 })
      if cu then
        assert.equal(cu, url.canonical(cu, { keep_fragment = true }))
        assert.is_table(url.parse(cu))
      end
      local fp = url.fingerprint(u)
      assert.is_true(fp == nil or #fp == 16)
      assert.is_true(p == nil or type(p) == "table")
      url.join("http://a/b/c", u)
      url.join(u, "../x")
    end
  end)
end)
