local cache = require "forage.crawl.cache"
local forage = require "forage"
local helpers = require "helpers"

local RESPONSE = {
  status = 200, url = "http://h.test/final", request_url = "http://h.test/start",
  headers = { ["content-type"] = "text/html", ["set-cookie"] = "a=1, b=2" },
  body = "<html>\0binary\255</html>", elapsed = 0.5, proxy = "http://p:***@x:1",
}

local function listing(dir)
  local ls = assert(io.popen("cd " .. dir .. " && find . -type f | sort"))
  local out = ls:read("a")
  ls:close()
  return out
end

describe("forage.crawl.cache", function()
  local dir
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
  end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  it("creates its directory, stores one file a fingerprint under its first two characters, reads it back", function()
    local c = assert(cache.open(dir .. "/deep/er"))
    assert.is_nil(c:get("abcdef0123"))
    assert.is_true(c:put("abcdef0123", RESPONSE))
    assert.equal("./ab/abcdef0123\n", listing(dir .. "/deep/er"))   -- no temporary file left
    assert.same({ status = 200, url = "http://h.test/final", request_url = "http://h.test/start",
                  headers = RESPONSE.headers, body = RESPONSE.body }, c:get("abcdef0123"))
    assert.equal(1, c.hits)
    assert.equal(1, c.misses)
    assert.equal(1, c.stores)
  end)

  it("names a raw fingerprint (forage.url.fingerprint's bytes) in hex", function()
    local c = assert(cache.open(dir))
    local fp = forage.url.fingerprint("http://h.test/a")
    local hex = fp:gsub(".", function(ch) return string.format("%02x", ch:byte()) end)
    c:put(fp, RESPONSE)
    assert.equal("./" .. hex:sub(1, 2) .. "/" .. hex .. "\n", listing(dir))
    assert.equal(200, c:get(fp).status)
    assert.is_nil(c:get(forage.url.fingerprint("http://h.test/b")))
  end)

  it("replaces an entry stored again", function()
    local c = assert(cache.open(dir))
    c:put("ff00", RESPONSE)
    c:put("ff00", { status = 404, url = "u", headers = {}, body = "" })
    assert.equal(404, c:get("ff00").status)
  end)

  it("misses on refresh but still stores, for the next run", function()
    local first = assert(cache.open(dir))
    first:put("aa11", RESPONSE)
    local refreshing = assert(cache.open(dir, { refresh = true }))
    assert.is_nil(refreshing:get("aa11"))
    refreshing:put("aa11", { status = 201, url = "u", headers = {}, body = "new" })
    assert.equal("new", assert(cache.open(dir)):get("aa11").body)
  end)

  it("takes a corrupt, truncated, foreign or code-carrying file as a miss", function()
    local c = assert(cache.open(dir))
    c:put("bb22", RESPONSE)
    local path = dir .. "/bb/bb22"
    local good = helpers.read(path)
    local bad = {
      good:sub(1, #good // 2),                                 -- truncated
      "garbage",
      "",
      forage.encode({ status = "200", url = "u", headers = {}, body = "" }),  -- wrong shape
      forage.encode("just a string"),
      forage.encode({ status = 200, url = "u", headers = {}, body = "", f = function() end }, { code = true }),
    }
    for i, bytes in ipairs(bad) do
      helpers.write(path, bytes)
      assert.is_nil(c:get("bb22"), "case " .. i)
    end
    assert.equal(0, c.hits)
  end)

  it("sees entries another process stored", function()
    local out, ok = helpers.run_lua(string.format([[
      local c = assert(require("forage.crawl.cache").open(%q))
      assert(c:put("cc33", { status = 200, url = "u", headers = { a = "b" }, body = "from another process" }))
    ]], dir))
    assert(ok, out)
    assert.equal("from another process", assert(cache.open(dir)):get("cc33").body)
  end)

  it("returns nil, message, 'io' for a directory it cannot make or write", function()
    helpers.write(dir, "a file, not a directory")
    local c, message, kind = cache.open(dir .. "/sub")
    assert.is_nil(c)
    assert.truthy(message:find("is not writable", 1, true), message)
    assert.equal("io", kind)
  end)

  it("raises on misuse in Lua's words", function()
    local c = assert(cache.open(dir))
    assert.has_error(function() c:get(5) end, "bad argument #1 to 'get' (string expected, got number)")
    assert.has_error(function() c:get("") end, "bad argument #1 to 'get' (empty fingerprint)")
    assert.has_error(function() c:put("ab12", "body") end, "bad argument #2 to 'put' (table expected, got string)")
    assert.has_error(function() cache.open(dir, { refesh = true }) end,
      "forage.crawl.cache.open: unknown option 'refesh' (known: refresh)")
  end)
end)
