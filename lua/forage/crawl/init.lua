-- forage.crawl: spiders in plain Lua, fetched through sticky proxy slots, with exact
-- completion. `forage.crawl(spider [, opts])` runs one and returns its stats; the README's
-- crawl section and docs/crawl.md are the reference.
local engine = require "forage.crawl.engine"
local spider = require "forage.crawl.spider"

local M = {
  -- exit codes of a crawl (stats.exit_code; the command line's too)
  DONE = engine.DONE, FATAL = engine.FATAL, BAD_INPUT = engine.BAD_INPUT, NO_PROXY = engine.NO_PROXY,
  INTERRUPTED = engine.INTERRUPTED, TERMINATED = engine.TERMINATED,
  -- the metatable of the errors forage.crawl raises for bad input found before any request
  -- (an output or cache that cannot be opened): e.message
  BadInput = engine.BadInput,
}

-- crawl.run(spider [, opts]) -> stats. opts override the spider's settings and add output,
-- failed, stats (file paths), on_progress, log_level, quiet.
M.run = engine.run

-- crawl.load(path) -> the spider table a file returns, or nil, message.
M.load = spider.load

-- crawl.check(spider [, opts]) -> the settings with their defaults; raises on a bad one.
M.check = spider.check

return setmetatable(M, { __call = function(_, ...) return engine.run(...) end })
