local progress = require "forage.crawl.progress"
local log = require "forage.crawl.log"

-- A stream that keeps what is written, and a clock the spec moves by hand.
local function sink()
  local s = { text = "" }
  function s:write(...)
    self.text = self.text .. table.concat({ ... })
    return self
  end
  function s:flush() return self end
  function s:take()
    local t = self.text
    self.text = ""
    return t
  end
  return s
end

local function manual_clock()
  local c = { t = 0 }
  return c, function() return c.t end
end

local S = { done = 120, queued = 30, inflight = 20, items = 118, failed = 2, pages_per_s = 42.06,
            proxies = { live = 18, cooling = 1, retired = 1 } }
local LINE = "done 120 | queued 30 | in flight 20 | items 118 | failed 2 | 42.1 pages/s"
  .. " | proxies 18 live, 1 cooling, 1 retired"

describe("forage.crawl.progress", function()
  it("formats the counts, missing ones as 0 and no proxies part without proxies", function()
    assert.equal(LINE, progress.format(S))
    assert.equal("done 0 | queued 0 | in flight 0 | items 0 | failed 0 | 0.0 pages/s", progress.format({}))
  end)

  it("on a terminal rewrites one line in place, at most every 0.1 s, and ends it on finish", function()
    local out, c, clock = sink(), manual_clock()
    local p = progress.new({ stream = out, tty = true, clock = clock })
    assert.is_true(p:update(S))
    assert.equal("\r" .. LINE .. "\27[K", out:take())
    c.t = c.t + 0.05
    assert.is_false(p:update(S))
    assert.equal("", out:take())
    c.t = c.t + 0.05
    assert.is_true(p:update({ done = 1 }))
    assert.equal("\rdone 1 | queued 0 | in flight 0 | items 0 | failed 0 | 0.0 pages/s\27[K", out:take())
    p:clear()   -- before a log line: erased, and drawn again at the next update however soon
    assert.equal("\r\27[K", out:take())
    assert.is_true(p:update(S))
    p:finish(S)
    assert.equal("\r" .. LINE .. "\27[K" .. "\r" .. LINE .. "\27[K\n", out:take())
    assert.is_false(p:update(S))   -- finished
    assert.equal("", out:take())
  end)

  it("elsewhere writes a plain line every interval seconds", function()
    local out, c, clock = sink(), manual_clock()
    local p = progress.new({ stream = out, tty = false, interval = 5, clock = clock })
    assert.is_false(p:update(S))
    c.t = c.t + 4.9
    assert.is_false(p:update(S))
    c.t = c.t + 0.1
    assert.is_true(p:update(S))
    assert.equal("forage: " .. LINE .. "\n", out:take())
    c.t = c.t + 1
    assert.is_false(p:update(S))
    p:clear()   -- nothing to erase off a terminal
    p:finish(S)
    assert.equal("forage: " .. LINE .. "\n", out:take())
  end)

  it("writes nothing when quiet", function()
    local out, c, clock = sink(), manual_clock()
    local p = progress.new({ stream = out, tty = true, quiet = true, clock = clock })
    c.t = c.t + 100
    assert.is_false(p:update(S))
    p:finish(S)
    assert.equal("", out.text)
  end)

  it("detects a terminal on stderr (under script(1)'s pty) and not in a file or with TERM=dumb", function()
    local code = "io.stdout:write(tostring(require('forage.crawl.progress').new().tty))"
    local env = string.format("LUA_PATH='%s' LUA_CPATH='%s'", package.path, package.cpath)
    local function run(cmd)
      local pipe = assert(io.popen(cmd))
      local out = pipe:read("a")
      pipe:close()
      return out
    end
    local lua = string.format("%s lua5.4 -e \"%s\"", env, code)
    assert.equal("false", run("TERM=xterm " .. lua .. " 2>/dev/null"))
    assert.truthy(run("TERM=xterm script -qec '" .. lua:gsub("'", "'\\''") .. "' /dev/null </dev/null"):find("true"))
    assert.truthy(run("TERM=dumb script -qec '" .. lua:gsub("'", "'\\''") .. "' /dev/null </dev/null"):find("false"))
  end)

  it("raises on unknown options and bad values", function()
    assert.has_error(function() progress.new({ intervall = 1 }) end,
      "forage.crawl.progress.new: unknown option 'intervall' (known: clock, interval, quiet, stream, tty)")
    assert.has_error(function() progress.new({ interval = -1 }) end,
      "forage.crawl.progress.new: option 'interval' must be a non-negative number of seconds, got -1")
    assert.has_error(function() progress.new({ tty = true }):update(nil) end,
      "bad argument #1 to 'update' (table expected, got no value)")
  end)
end)

describe("forage.crawl.log", function()
  it("writes lines prefixed 'forage: ' at its level and above", function()
    local out = sink()
    local l = log.new({ level = "warn", stream = out })
    l:debug("d")
    l:info("i %d", 1)
    l:warn("proxy %s cooled for %.1f s", "p1", 2.5)
    l:error("boom")
    assert.equal("forage: proxy p1 cooled for 2.5 s\nforage: boom\n", out.text)
    assert.is_false(l:enabled("info"))
    assert.is_true(l:enabled("error"))
  end)

  it("defaults to info, and writes a message without arguments as it is", function()
    local out = sink()
    local l = log.new({ stream = out })
    l:debug("hidden")
    l:info("100% done")
    assert.equal("forage: 100% done\n", out.text)
  end)

  it("shows errors only when quiet, whatever the level", function()
    local out = sink()
    local l = log.new({ level = "debug", quiet = true, stream = out })
    l:debug("a")
    l:info("b")
    l:warn("c")
    l:error("d")
    assert.equal("forage: d\n", out.text)
  end)

  it("calls before ahead of each line it writes (a progress line clears itself there)", function()
    local out, calls = sink(), 0
    local l = log.new({ stream = out, before = function()
      calls = calls + 1
      out:write("[clear]")
    end })
    l:debug("skipped")
    l:info("x")
    assert.equal(1, calls)
    assert.equal("[clear]forage: x\n", out.text)
  end)

  it("raises on an unknown level or option, naming the known ones", function()
    assert.has_error(function() log.new({ level = "verbose" }) end,
      "forage.crawl.log.new: option 'level' must be one of debug, info, warn, error, got 'verbose'")
    assert.has_error(function() log.new({ levle = "info" }) end,
      "forage.crawl.log.new: unknown option 'levle' (known: before, level, quiet, stream)")
    assert.has_error(function() log.new():enabled("loud") end,
      "bad argument #1 to 'enabled' (level must be one of debug, info, warn, error, got 'loud')")
  end)
end)
