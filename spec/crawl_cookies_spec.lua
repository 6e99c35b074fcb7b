local cookies = require "forage.crawl.cookies"

local NOW = 1445412480 - 3600   -- an hour before Wed, 21 Oct 2015 07:28:00 GMT

describe("forage.crawl.cookies", function()
  it("keeps a cookie without Domain for its host only", function()
    local jar = cookies.jar()
    assert.is_true(jar:store("http://a.example.com/", "s=1", NOW))
    assert.equal("s=1", jar:header("http://a.example.com/x", NOW))
    assert.equal("s=1", jar:header("http://A.Example.COM/x", NOW))
    assert.is_nil(jar:header("http://b.a.example.com/", NOW))
    assert.is_nil(jar:header("http://example.com/", NOW))
  end)

  it("sends a Domain cookie to the domain and its subdomains, and refuses a foreign or dotless one", function()
    local jar = cookies.jar()
    jar:store("http://a.example.com/", { "d=1; Domain=example.com", "e=2; domain=.EXAMPLE.com",
      "x=1; Domain=other.com", "y=1; Domain=com", "z=1; Domain=b.a.example.com" }, NOW)
    assert.equal("d=1; e=2", jar:header("http://example.com/", NOW))
    assert.equal("d=1; e=2", jar:header("http://deep.b.example.com/", NOW))
    assert.is_nil(jar:header("http://notexample.com/", NOW))
    assert.is_nil(jar:header("http://other.com/", NOW))
    assert.is_nil(jar:header("http://example.org/", NOW))
  end)

  it("lets an IP address host keep cookies for itself only", function()
    local jar = cookies.jar()
    jar:store("http://127.0.0.1:8080/", "a=1; Domain=127.0.0.1", NOW)
    jar:store("http://127.0.0.1:8080/", "b=1; Domain=0.0.1", NOW)
    assert.equal("a=1", jar:header("http://127.0.0.1:9090/", NOW))
  end)

  it("takes the request's directory as the default path, and path-matches on segments", function()
    local jar = cookies.jar()
    jar:store("http://h.test/dir/page", "p=1", NOW)
    jar:store("http://h.test/dir/page", "q=1; Path=/a", NOW)
    jar:store("http://h.test/dir/page", "r=1; Path=relative", NOW)   -- not absolute: the default path
    assert.equal("p=1; r=1", jar:header("http://h.test/dir", NOW))
    assert.equal("p=1; r=1", jar:header("http://h.test/dir/x/y", NOW))
    assert.is_nil(jar:header("http://h.test/", NOW))
    assert.is_nil(jar:header("http://h.test/directory", NOW))
    assert.equal("q=1", jar:header("http://h.test/a/b", NOW))
    assert.is_nil(jar:header("http://h.test/ab", NOW))
  end)

  it("sends Secure cookies over https only, and takes them from https only", function()
    local jar = cookies.jar()
    jar:store("https://h.test/", "s=1; Secure; HttpOnly", NOW)
    jar:store("http://h.test/", "t=1; Secure", NOW)
    assert.equal("s=1", jar:header("https://h.test/", NOW))
    assert.is_nil(jar:header("http://h.test/", NOW))
  end)

  it("honours Max-Age before Expires, and deletes with Max-Age=0 or a past date", function()
    local jar = cookies.jar()
    jar:store("http://h.test/", "m=1; Max-Age=60; Expires=Thu, 01 Jan 1970 00:00:00 GMT", NOW)
    assert.equal("m=1", jar:header("http://h.test/", NOW + 59))
    assert.is_nil(jar:header("http://h.test/", NOW + 60))
    jar:store("http://h.test/", "k=1", NOW)
    jar:store("http://h.test/", "k=gone; Max-Age=0", NOW)
    jar:store("http://h.test/", "j=1", NOW)
    jar:store("http://h.test/", "j=gone; Expires=Thu, 01 Jan 1970 00:00:00 GMT", NOW)
    assert.is_nil(jar:header("http://h.test/", NOW))
  end)

  it("splits the values forage.http joins with ', ' without cutting Expires dates", function()
    local jar = cookies.jar()
    jar:store("http://h.test/", "a=1; Expires=Wed, 21 Oct 2015 07:28:00 GMT; Path=/, b=x,y; "
      .. "expires=Wednesday, 21-Oct-15 07:28:00 GMT, c=3", NOW)
    assert.equal("a=1; b=x,y; c=3", jar:header("http://h.test/", NOW))
    -- both dates were read: an hour and a second later, a and b are gone
    assert.equal("c=3", jar:header("http://h.test/", NOW + 3601))
  end)

  it("reads the cookie-date forms RFC 6265 accepts", function()
    local jar = cookies.jar()
    for i, date in ipairs({ "Wed, 21 Oct 2015 07:28:00 GMT", "Wednesday, 21-Oct-15 07:28:00 GMT",
                            "Wed Oct 21 07:28:00 2015", "21 Oct 2015 07:28:00" }) do
      jar:store("http://h.test/", "c" .. i .. "=1; Expires=" .. date, NOW)
    end
    assert.equal("c1=1; c2=1; c3=1; c4=1", jar:header("http://h.test/", 1445412480 - 1))
    assert.is_nil(jar:header("http://h.test/", 1445412480))
  end)

  it("lets the newest cookie of a name, domain and path win, and orders longer paths first", function()
    local jar = cookies.jar()
    jar:store("http://h.test/", "a=1", NOW)
    jar:store("http://h.test/", "b=1", NOW)
    jar:store("http://h.test/", "a=2", NOW)             -- replaces a=1, keeps its place
    jar:store("http://h.test/", "a=deep; Path=/x", NOW) -- another path: another cookie
    assert.equal("a=2; b=1", jar:header("http://h.test/", NOW))
    assert.equal("a=deep; a=2; b=1", jar:header("http://h.test/x/y", NOW))
  end)

  it("ignores Set-Cookie values without a name or an '='", function()
    local jar = cookies.jar()
    jar:store("http://h.test/", { "=x", "novalue", "  ; Path=/" }, NOW)
    assert.is_nil(jar:header("http://h.test/", NOW))
  end)

  it("keeps jars apart and forgets all on clear", function()
    local one, two = cookies.jar(), cookies.jar()
    one:store("http://h.test/", "session=1", NOW)
    assert.is_nil(two:header("http://h.test/", NOW))
    one:clear()
    assert.is_nil(one:header("http://h.test/", NOW))
  end)

  it("returns nil, message, 'malformed' for a url it cannot read, and raises on misuse", function()
    local jar = cookies.jar()
    local ok, message, kind = jar:store("not a url", "a=1")
    assert.is_nil(ok)
    assert.is_string(message)
    assert.equal("malformed", kind)
    assert.is_nil(jar:header("not a url"))
    assert.has_error(function() jar:store("http://h.test/", 5) end,
      "bad argument #2 to 'store' (string or table expected, got number)")
    assert.has_error(function() jar:store(nil, "a=1") end, "bad argument #1 to 'store' (string expected, got no value)")
  end)
end)
