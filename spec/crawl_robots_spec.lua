local robots = require "forage.crawl.robots"

local function check(rules, ua, cases)
  for path, want in pairs(cases) do
    assert.equal(want, rules:allowed(ua, path), ua .. " " .. path)
  end
end

describe("forage.crawl.robots", function()
  -- RFC 9309 section 5.1, as printed there (its last line included)
  local RFC_5_1 = [[
User-Agent: *
Disallow: *.gif$
Disallow: /example/
Allow: /publications/

User-Agent: foobot
Disallow:/
Allow:/example/page.html
Allow:/example/allowed.gif

User-Agent: barbot
User-Agent: bazbot
Disallow: /example/page.html

User-Agent: quxbot

EOF
]]

  it("chooses groups as RFC 9309's example 5.1 says", function()
    local r = robots.parse(RFC_5_1)
    check(r, "foobot", { ["/example/page.html"] = true, ["/example/allowed.gif"] = true, ["/"] = false,
                         ["/other"] = false, ["/example/other.gif"] = false })
    check(r, "barbot/2.0", { ["/example/page.html"] = false, ["/example/other"] = true, ["/x.gif"] = true })
    check(r, "BazBot", { ["/example/page.html"] = false, ["/"] = true })
    check(r, "quxbot", { ["/example/page.html"] = true, ["/x.gif"] = true })
    -- any other agent falls back to the * group
    check(r, "forage/0.1 (+https://example.com/bot)", { ["/pic.gif"] = false, ["/pic.gif?x=1"] = true,
      ["/example/a"] = false, ["/publications/a"] = true, ["/"] = true })
  end)

  it("lets the longest match win (RFC 9309 example 5.2), and Allow win a tie", function()
    local r = robots.parse("User-Agent: foobot\nAllow: /example/page/\nDisallow: /example/page/disallowed.gif\n")
    check(r, "foobot", { ["/example/page/"] = true, ["/example/page/disallowed.gif"] = false,
                         ["/example/page/other.gif"] = true })
    local tie = robots.parse("User-agent: *\nDisallow: /page\nAllow: /page\n")
    assert.is_true(tie:allowed("x", "/page"))
    local longer = robots.parse("User-agent: *\nAllow: /page\nDisallow: /*.html\n")
    assert.is_false(longer:allowed("x", "/page.html"))
    assert.is_true(longer:allowed("x", "/page"))
  end)

  it("matches * and a final $ as Google documents them", function()
    local r = robots.parse("User-agent: *\nDisallow: /fish\nDisallow: /*.php$\nDisallow: /shop*.asp\n")
    check(r, "x", {
      ["/fish"] = false, ["/fish.html"] = false, ["/fish/salmon.html"] = false, ["/fishheads"] = false,
      ["/Fish.asp"] = true, ["/catfish"] = true,
      ["/filename.php"] = false, ["/folder/filename.php"] = false,
      ["/filename.php?parameters"] = true, ["/filename.php/"] = true, ["/windows.PHP"] = true,
      ["/shopheads/cat.asp?p=1"] = false, ["/Shop.ASP"] = true,
    })
    -- a $ that is not last is an ordinary character
    local dollar = robots.parse("User-agent: *\nDisallow: /a$b\n")
    assert.is_false(dollar:allowed("x", "/a$bc"))
    assert.is_true(dollar:allowed("x", "/ab"))
  end)

  it("compares paths after normalising percent-encoding (RFC 9309 2.2.2)", function()
    local r = robots.parse("User-agent: *\nDisallow: /foo/bar/%E3%83%84\nDisallow: /foo/bar/%62%61%7A\n"
      .. "Disallow: /a%3c\nDisallow: /raw/ツ\n")
    check(r, "x", {
      ["/foo/bar/ツ"] = false, ["/foo/bar/%e3%83%84"] = false, ["/foo/bar/baz"] = false,
      ["/foo/bar/%62az"] = false, ["/a%3C"] = false, ["/raw/%E3%83%84"] = false,
      ["/foo/bar/other"] = true, ["/a<"] = false,
    })
  end)

  it("reads user agents case-insensitively, merges groups naming one agent, ignores rules before any group", function()
    local r = robots.parse("Disallow: /orphan\nUser-agent: FooBot\nDisallow: /a\n\nuser-agent: foobot\ndisallow: /b\n"
      .. "USER-AGENT: *\nDISALLOW: /c\n")
    check(r, "foobot/1.2", { ["/a"] = false, ["/b"] = false, ["/c"] = true, ["/orphan"] = true })
    check(r, "other", { ["/a"] = true, ["/c"] = false, ["/orphan"] = true })
  end)

  it("takes an empty Disallow as allowing all, and allows all without a matching group", function()
    assert.is_true(robots.parse("User-agent: *\nDisallow:\n"):allowed("x", "/anything"))
    assert.is_true(robots.parse("User-agent: foobot\nDisallow: /\n"):allowed("otherbot", "/x"))
    assert.is_true(robots.parse(""):allowed("x", "/"))
  end)

  it("always allows /robots.txt itself", function()
    assert.is_true(robots.parse("User-agent: *\nDisallow: /\n"):allowed("x", "/robots.txt"))
    assert.is_false(robots.parse("User-agent: *\nDisallow: /\n"):allowed("x", "/"))
    assert.is_false(robots.parse("User-agent: *\nDisallow: /\n"):allowed("x", ""))   -- "" is "/"
  end)

  it("survives comments, CRLF, a byte order mark, a missing colon and stray lines", function()
    local r = robots.parse("\239\187\191# hi\r\nUser-agent: * # all\r\nDisallow /private # no colon\r\n"
      .. "garbage line\r\nAllow: /private/ok\r\nCrawl-delay: 2.5\r\nSitemap: https://example.com/s.xml\r\n")
    check(r, "x", { ["/private/a"] = false, ["/private/ok"] = true, ["/public"] = true })
    assert.equal(2.5, r:crawl_delay("x"))
    assert.same({ "https://example.com/s.xml" }, r.sitemaps)
  end)

  it("gives each group's crawl delay, nil where there is none", function()
    local r = robots.parse("User-agent: slowbot\nCrawl-delay: 10\n\nUser-agent: *\nDisallow: /x\n")
    assert.equal(10, r:crawl_delay("SlowBot/1.0"))
    assert.is_nil(r:crawl_delay("other"))
    assert.is_nil(robots.parse("User-agent: *\nCrawl-delay: soon\n"):crawl_delay("x"))
  end)

  it("reads the first 500 KiB and ignores the rest", function()
    local text = "User-agent: *\n" .. ("# padding padding padding\n"):rep(20000) .. "Disallow: /\n"
    assert.is_true(#text > 500 * 1024)
    assert.is_true(robots.parse(text):allowed("x", "/page"))
    assert.is_false(robots.parse("User-agent: *\nDisallow: /\n"):allowed("x", "/page"))
  end)

  it("answers by status as RFC 9309 2.3.1 says (a 429 as a server error, as Google does)", function()
    local body = "User-agent: *\nDisallow: /private\n"
    local ok = robots.for_status(200, body)
    assert.is_false(ok:allowed("x", "/private"))
    assert.is_true(ok:allowed("x", "/public"))
    for _, status in ipairs({ 400, 401, 403, 404, 410 }) do
      local r = robots.for_status(status, body)
      assert.is_true(r:allowed("x", "/private"), status)   -- unavailable: allow all
      assert.equal("allow_all", r.kind)
    end
    for _, status in ipairs({ 429, 500, 503 }) do
      local r = robots.for_status(status, body)
      assert.is_false(r:allowed("x", "/public"), status)   -- unreachable: disallow all
      assert.equal("disallow_all", r.kind)
    end
    assert.is_false(robots.for_status(nil):allowed("x", "/"))   -- no answer at all
    assert.is_nil(robots.for_status(nil):crawl_delay("x"))
  end)

  it("raises on misuse in Lua's words", function()
    assert.has_error(function() robots.parse(nil) end, "bad argument #1 to 'parse' (string expected, got no value)")
    local r = robots.parse("")
    assert.has_error(function() r:allowed("x", 5) end, "bad argument #2 to 'allowed' (string expected, got number)")
  end)
end)
