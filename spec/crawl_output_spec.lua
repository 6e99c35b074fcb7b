local output = require "forage.crawl.output"
local cjson = require "cjson"
local helpers = require "helpers"

-- Reads a file back with Python (a reader that is not ours): CSV rows or JSON lines, as
-- a JSON list that cjson decodes.
local function python_read(kind, path)
  local script = kind == "csv"
    and "import csv,json,sys; print(json.dumps(list(csv.reader(open(sys.argv[1], newline='')))))"
    or "import json,sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1], encoding='utf-8')]))"
  -- env -u LD_PRELOAD: under make check the sanitizer is preloaded, and Python is not ours to check
  local pipe = assert(io.popen(string.format("env -u LD_PRELOAD /usr/bin/python3 -c \"%s\" '%s' 2>&1", script, path)))
  local out = pipe:read("a")
  assert(pipe:close(), out)
  return cjson.decode(out)
end

describe("forage.crawl.output", function()
  local dir
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
  end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  describe("JSON Lines", function()
    it("writes one line an item, keys sorted, read back whole by another reader", function()
      local w = assert(output.open(dir .. "/items.jsonl"))
      assert.is_true(w:write({ url = "http://x/1", directors = { "A", "B" }, meta = { z = 1, a = false },
                               none = cjson.null, n = (1 << 53) + 1, f = 0.1, empty = {} }))
      assert.is_true(w:write({ ["ключ"] = "значение \"q\"\n\0", url = "http://x/2" }))
      assert.equal(2, w.count)
      assert.is_true(w:close())
      assert.equal('{"directors":["A","B"],"empty":[],"f":0.1,"meta":{"a":false,"z":1},"n":9007199254740993,'
        .. '"none":null,"url":"http://x/1"}\n'
        .. '{"url":"http://x/2","ключ":"значение \\"q\\"\\n\\u0000"}\n', helpers.read(dir .. "/items.jsonl"))
      local items = python_read("json", dir .. "/items.jsonl")
      assert.equal("значение \"q\"\n\0", items[2]["ключ"])
      assert.same({ "A", "B" }, items[1].directors)
    end)

    it("has each line on disk, whole, as soon as write returns", function()
      local w = assert(output.open(dir .. "/items.jsonl"))
      local big = string.rep("x", 1 << 20)
      w:write({ body = big })
      local text = helpers.read(dir .. "/items.jsonl")   -- another handle, the writer still open
      assert.equal('{"body":"' .. big .. '"}\n', text)
      w:write({ n = 1 })
      assert.equal('{"body":"' .. big .. '"}\n{"n":1}\n', helpers.read(dir .. "/items.jsonl"))
      w:close()
    end)

    it("refuses what JSON cannot hold, writing nothing of it", function()
      local w = assert(output.open(dir .. "/items.jsonl"))
      local cycle = { name = "c" }
      cycle.self = cycle
      local cases = {
        { { f = print }, "a function at .f" },
        { { list = { 1, io.stdout } }, "a userdata at .list[2]" },
        { cycle, "a cycle at .self" },
        { { mixed = { 1, 2, x = 3 } }, "mixing" },
        { { sparse = { 1, nil, 3 } }, "mixing" },
        { { [1.5] = "float key" }, "mixing" },
        { { n = 0 / 0 }, "NaN" },
        { { n = math.huge }, "infinity" },
        { { s = "caf\233" }, "not UTF-8" },
        { "a string", "must be a table" },
      }
      for _, case in ipairs(cases) do
        local ok, message, kind = w:write(case[1])
        assert.is_nil(ok)
        assert.truthy(message:find(case[2], 1, true), message)
        assert.equal("value", kind)
      end
      local shared = { "s" }
      assert.is_true(w:write({ a = shared, b = shared }))   -- shared, not a cycle
      w:close()
      assert.equal(1, w.count)
      assert.equal('{"a":["s"],"b":["s"]}\n', helpers.read(dir .. "/items.jsonl"))
    end)

    it("takes .ndjson and .json as JSON Lines too, and appends when asked", function()
      for _, name in ipairs({ "a.ndjson", "b.json", "C.JSONL" }) do
        local w = assert(output.open(dir .. "/" .. name))
        w:write({ i = 1 })
        w:close()
        w = assert(output.open(dir .. "/" .. name, { append = true }))
        w:write({ i = 2 })
        w:close()
        assert.equal('{"i":1}\n{"i":2}\n', helpers.read(dir .. "/" .. name))
        w = assert(output.open(dir .. "/" .. name))   -- not appending: starts afresh
        w:close()
        assert.equal("", helpers.read(dir .. "/" .. name))
      end
    end)

    it("writes '-' to stdout and leaves stdout open", function()
      local out, ok = helpers.run_lua([[
        local w = require("forage.crawl.output").open("-")
        w:write({ b = 1, a = "x" })
        w:close()
        io.stdout:write("still open\n")
      ]])
      assert(ok, out)
      assert.equal('{"a":"x","b":1}\nstill open\n', out)
    end)
  end)

  it("writes slashes as they are, and a backslash before one escaped", function()
    local item = { a = "http://x/y", b = "x\\/y", c = "\\" }
    assert.equal('{"a":"http://x/y","b":"x\\\\/y","c":"\\\\"}', output.encode(item))
    assert.same(item, require("cjson").decode(output.encode(item)))
  end)

  describe("CSV", function()
    it("takes columns from the first item, quotes by RFC 4180, joins lists with |", function()
      local path = dir .. "/items.csv"
      local w = assert(output.open(path))
      assert.is_true(w:write({ title = 'He said "hi", then\nleft', directors = { "A", "B", 3 },
                               meta = { k = { 1, 2 } }, rank = 1.5 }))
      assert.is_true(w:write({ title = "plain", rank = 2, extra = "dropped", other = true }))   -- no directors
      w:close()
      assert.equal(2, w.count)
      assert.equal(2, w.dropped_keys)
      local text = helpers.read(path)
      assert.equal("directors,meta,rank,title\r\n", text:sub(1, 27))
      assert.same({
        { "directors", "meta", "rank", "title" },
        { "A|B|3", '{"k":[1,2]}', "1.5", 'He said "hi", then\nleft' },
        { "", "", "2", "plain" },
      }, python_read("csv", path))
    end)

    it("appends under the existing header without writing another", function()
      local path = dir .. "/items.csv"
      local w = assert(output.open(path))
      w:write({ b = "1", a = "2" })
      w:close()
      w = assert(output.open(path, { append = true }))
      w:write({ a = "3", b = "4", c = "dropped" })
      w:close()
      assert.equal(1, w.dropped_keys)
      assert.same({ { "a", "b" }, { "2", "1" }, { "3", "4" } }, python_read("csv", path))
    end)

    it("refuses an item it cannot write as a row, writing nothing of it", function()
      local path = dir .. "/items.csv"
      local w = assert(output.open(path))
      assert.same({ nil, "the first CSV item has no keys to make columns from", "value" }, { w:write({}) })
      assert.same({ nil, "a CSV item must have string keys only", "value" }, { w:write({ "a", "b" }) })
      assert.is_true(w:write({ a = 1 }))
      local ok, message = w:write({ a = print })
      assert.is_nil(ok)
      assert.equal("cannot write a function at a", message)
      ok, message = w:write({ a = 0 / 0 })
      assert.is_nil(ok)
      assert.truthy(message:find("at a (JSON has no NaN", 1, true), message)
      w:close()
      assert.equal("a\r\n1\r\n", helpers.read(path))
    end)
  end)

  it("names the failed output beside the items", function()
    assert.equal("items.failed.jsonl", output.failed_path("items.jsonl"))
    assert.equal("out/items.failed.jsonl", output.failed_path("out/items.csv"))
    assert.equal("a.b/items.failed.jsonl", output.failed_path("a.b/items.json"))
    assert.is_nil(output.failed_path("-"))
  end)

  it("raises on an unknown extension or option, naming it", function()
    assert.has_error(function() output.open(dir .. "/items.txt") end,
      "forage.crawl.output.open: unknown output format '.txt' for '" .. dir .. "/items.txt' (known: .jsonl, "
      .. ".ndjson, .json (JSON Lines), .csv, or '-' for stdout)")
    assert.has_error(function() output.open("items") end,
      "forage.crawl.output.open: unknown output format (no extension) for 'items' (known: .jsonl, "
      .. ".ndjson, .json (JSON Lines), .csv, or '-' for stdout)")
    assert.has_error(function() output.open(dir .. "/a.jsonl", { apend = true }) end,
      "forage.crawl.output.open: unknown option 'apend' (known: append)")
    assert.has_error(function() output.failed_path("x.xml") end)
  end)

  it("returns nil, message, 'io' for a file it cannot open", function()
    local w, message, kind = output.open(dir .. "/missing/items.jsonl")
    assert.is_nil(w)
    assert.truthy(message:find("No such file", 1, true), message)
    assert.equal("io", kind)
  end)

  it("raises on a closed writer", function()
    local w = assert(output.open(dir .. "/a.jsonl"))
    w:close()
    assert.is_true(w:close())   -- twice is fine
    assert.has_error(function() w:write({}) end, "attempt to use a closed forage.crawl.output writer")
  end)

  describe("write_json", function()
    it("writes one sorted, indented document, replacing the old one whole", function()
      local path = dir .. "/stats.json"
      helpers.write(path, "old")
      assert.is_true(output.write_json(path, { pages = 3, by_status = { ["200"] = 2, ["404"] = 1 }, proxies = {} }))
      assert.equal('{\n  "by_status": {\n    "200": 2,\n    "404": 1\n  },\n  "pages": 3,\n  "proxies": []\n}\n',
        helpers.read(path))
      assert.same({ pages = 3, by_status = { ["200"] = 2, ["404"] = 1 }, proxies = {} },
        cjson.decode(helpers.read(path)))
      local ls = io.popen("ls -A " .. dir)
      assert.equal("stats.json\n", ls:read("a"))   -- no temporary file left
      ls:close()
    end)

    it("leaves the old document when the value cannot be written or the place is not writable", function()
      local path = dir .. "/stats.json"
      helpers.write(path, "old")
      local ok, message, kind = output.write_json(path, { f = print })
      assert.is_nil(ok)
      assert.equal("cannot write a function at .f", message)
      assert.equal("value", kind)
      assert.equal("old", helpers.read(path))
      ok, message, kind = output.write_json(dir .. "/missing/stats.json", {})
      assert.is_nil(ok)
      assert.is_string(message)
      assert.equal("io", kind)
    end)
  end)
end)
