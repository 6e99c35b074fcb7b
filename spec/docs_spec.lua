-- Every ```lua block of the README and of docs/*.md runs, alone, in a fresh lua5.4, so
-- that the documentation cannot rot. A block that cannot run alone is marked
-- ```lua fragment and only has to compile. Blocks that fetch use the placeholder hosts
-- below, which this spec points at its local servers (spec/fixtures.lua).
local helpers = require "helpers"
local fixtures = require "fixtures"

local PAGE_HOST = "http://example.com"                    -- nginx on 127.0.0.1
local PROXY = "http://user:pass@proxy.example:3128"       -- tinyproxy on 127.0.0.1

-- An index page for PAGE_HOST/ with what the html and http pages select.
local INDEX = [[<!doctype html><html><head><title>forage docs</title></head><body>
<div class="el-card"><a class="name" href="/detail/1"><h2>Movie 1</h2></a></div>
<div class="el-card"><a class="name" href="/detail/2"><h2>Movie 2</h2></a></div>
<div class="directors el-row"><p>Director A</p></div>
<div class="item"><a href="page.txt">the page</a></div>
</body></html>]]

local function doc_files()
  local files = { "README.md" }
  local ls = assert(io.popen("ls docs/*.md"))
  for path in ls:lines() do files[#files + 1] = path end
  ls:close()
  return files
end

-- The ```lua blocks of a markdown file: { line = n, code = s, fragment = bool }; raises on
-- a block left open or a lua fence with an unknown tag.
local function lua_blocks(path)
  local blocks, current, n = {}, nil, 0
  for line in io.lines(path) do
    n = n + 1
    if current then
      if line:match("^```%s*$") then
        blocks[#blocks + 1] = current
        current = nil
      else
        current.code = current.code .. line .. "\n"
      end
    else
      local tag = line:match("^```lua(.*)$")
      if tag then
        tag = tag:match("^%s*(.-)%s*$")
        assert(tag == "" or tag == "fragment", ("%s:%d: unknown tag '```lua %s'"):format(path, n, tag))
        current = { line = n, code = "", fragment = tag == "fragment" }
      end
    end
  end
  assert(current == nil, ("%s:%d: a ```lua block is never closed"):format(path, current and current.line or 0))
  return blocks
end

local function all_blocks()
  local list = {}
  for _, path in ipairs(doc_files()) do
    for _, block in ipairs(lua_blocks(path)) do
      block.where = path .. ":" .. block.line
      list[#list + 1] = block
    end
  end
  return list
end

describe("the documentation's Lua blocks", function()
  local fx = {}
  setup(function()
    fixtures.start(fx)
    helpers.write(fx.dir .. "/www/index.html", INDEX)
  end)
  teardown(function() fixtures.stop(fx) end)

  local blocks = all_blocks()

  it("are mostly runnable: fragments are the few that cannot run alone", function()
    local runnable, fragments = 0, 0
    for _, b in ipairs(blocks) do
      if b.fragment then fragments = fragments + 1 else runnable = runnable + 1 end
    end
    assert.is_true(runnable >= 20, "only " .. runnable .. " runnable blocks")
    assert.is_true(fragments * 4 <= runnable, fragments .. " fragments for " .. runnable .. " runnable blocks")
  end)

  for _, block in ipairs(blocks) do
    if block.fragment then
      it("compile: " .. block.where, function()
        assert(load(block.code, "=" .. block.where))
      end)
    else
      it("run: " .. block.where, function()
        local code = block.code
          :gsub(PAGE_HOST:gsub("%p", "%%%0"), fx.base)
          :gsub(PROXY:gsub("%p", "%%%0"), "http://user:pass@127.0.0.1:" .. fx.authproxy_port)
        local out, ok = helpers.run_lua(code)
        assert(ok, block.where .. " failed:\n" .. out)
      end)
    end
  end
end)
