-- bin/forage: `forage fetch` against the local nginx of spec/fixtures.lua.
local fixtures = require "fixtures"

-- Runs bin/forage with args; returns its stdout, stderr and exit code.
local function forage_cli(args)
  local err = os.tmpname()
  local p = assert(io.popen("lua5.4 bin/forage " .. args .. " 2>" .. err))
  local out = p:read("a")
  local _, _, code = p:close()
  local f = assert(io.open(err))
  local stderr = f:read("a")
  f:close()
  os.remove(err)
  return out, stderr, code
end

describe("forage fetch", function()
  local fx = {}
  local page = [[<html><body>
<div class="el-card"><a class="name" href="/detail/1"><h2>Farewell My Concubine</h2></a></div>
<div class="el-card"><a class="name" href="/detail/2"><h2>Titanic</h2></a></div>
<div class="directors el-row"><p>Chen Kaige</p></div>
</body></html>]]

  setup(function()
    fixtures.start(fx)
    local f = assert(io.open(fx.dir .. "/www/list.html", "w"))
    f:write(page)
    f:close()
  end)

  teardown(function() fixtures.stop(fx) end)

  it("prints the body of a page", function()
    local out, _, code = forage_cli("fetch " .. fx.base .. "/list.html")
    assert.equal(0, code)
    assert.equal(page, out)
  end)

  it("prints what an XPath finds, one a line", function()
    local out, _, code = forage_cli("fetch " .. fx.base .. "/list.html --xpath '//a[@class=\"name\"]/@href'")
    assert.equal(0, code)
    assert.equal("/detail/1\n/detail/2\n", out)
  end)

  it("prints what a CSS selector finds, with ::text", function()
    local out = forage_cli("fetch " .. fx.base .. "/list.html --css 'a.name h2::text'")
    assert.equal("Farewell My Concubine\nTitanic\n", out)
  end)

  it("prints elements as HTML", function()
    local out = forage_cli("fetch " .. fx.base .. "/list.html --css 'div.directors p'")
    assert.equal("<p>Chen Kaige</p>\n", out)
  end)

  it("prints the status and headers with --headers", function()
    local out = forage_cli("fetch " .. fx.base .. "/page.txt --headers")
    assert.truthy(out:match("^200 " .. fx.base:gsub("%p", "%%%0") .. "/page.txt\n"))
    assert.truthy(out:find("content-type: text/plain\n", 1, true))
  end)

  it("goes through a proxy", function()
    local out, _, code = forage_cli("fetch " .. fx.base .. "/list.html --proxy " .. fx.proxy ..
      " --css 'div.directors p::text'")
    assert.equal(0, code)
    assert.equal("Chen Kaige\n", out)
  end)

  it("says why a fetch failed, and exits 1", function()
    local out, err, code = forage_cli("fetch http://127.0.0.1:" .. fx.dead_port .. "/")
    assert.equal(1, code)
    assert.equal("", out)
    assert.truthy(err:find("forage: fetch failed (connect)", 1, true), err)
  end)

  it("quotes a bad selector and exits 2", function()
    local _, err, code = forage_cli("fetch " .. fx.base .. "/list.html --xpath '//a[@'")
    assert.equal(2, code)
    assert.truthy(err:find("'//a[@'", 1, true), err)
  end)

  it("refuses bad arguments with the usage", function()
    local _, err, code = forage_cli("fetch")
    assert.equal(2, code)
    assert.truthy(err:find("fetch needs a URL", 1, true))
    _, err, code = forage_cli("fetch http://x --xpath a --css b")
    assert.equal(2, code)
    assert.truthy(err:find("--xpath or --css, not both", 1, true))
    _, err, code = forage_cli("crawl")
    assert.equal(2, code)
    assert.truthy(err:find("unknown command crawl", 1, true))
  end)
end)
