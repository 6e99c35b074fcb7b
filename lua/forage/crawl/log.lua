-- The crawl's log lines on stderr: "forage: <message>", filtered by level
-- (debug < info < warn < error); quiet shows errors only.
local args = require "forage.args"

local M = {}

local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }
local NAMES = "debug, info, warn, error"

local Log = {}
Log.__index = Log

-- l:enabled(level) -> whether a line of that level would be written.
function Log:enabled(level)
  local n = LEVELS[level]
  if not n then
    error(string.format("bad argument #1 to 'enabled' (level must be one of %s, got %s)", NAMES, args.show(level)), 2)
  end
  return n >= self.threshold
end

local function writer(level)
  local n = LEVELS[level]
  -- l:<level>(fmt, ...): string.format(fmt, ...) as one line; fmt alone is written as it is.
  return function(self, fmt, ...)
    if n < self.threshold then return end
    local message = select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt)
    if self.before then self.before() end
    self.stream:write("forage: ", message, "\n")
    self.stream:flush()
  end
end

for level in pairs(LEVELS) do Log[level] = writer(level) end

-- new{ level = "info", stream = io.stderr, quiet = false, before = nil } -> log. `before`
-- runs before each line is written (a progress line clears itself there).
function M.new(opts)
  opts = args.options("forage.crawl.log.new", opts, { level = true, stream = true, quiet = true, before = true })
  local level = opts.level or "info"
  if not LEVELS[level] then
    args.bad_option("forage.crawl.log.new", "level", "one of " .. NAMES, level)
  end
  if opts.before ~= nil and type(opts.before) ~= "function" then
    args.bad_option("forage.crawl.log.new", "before", "a function", opts.before)
  end
  local stream = opts.stream or io.stderr
  return setmetatable({
    level = level,
    threshold = opts.quiet and LEVELS.error or LEVELS[level],
    stream = stream,
    before = opts.before,
  }, Log)
end

return M
