-- The crawl's progress on stderr: on a terminal one line rewritten in place ("\r", the
-- line, clear to its end) at most ten times a second; elsewhere (a file, a pipe, CI) a
-- plain log line every `interval` seconds. Time is forage.now(), monotonic.
local args = require "forage.args"
local forage = require "forage"

local M = {}

local TTY_GAP = 0.1
local CLEAR_EOL = "\27[K"

local Progress = {}
Progress.__index = Progress

local function num(v) return tonumber(v) or 0 end

-- The text of a stats table s (fields missing count as 0; proxies left out when absent).
function M.format(s)
  local text = string.format("done %d | queued %d | in flight %d | items %d | failed %d | %.1f pages/s",
    num(s.done), num(s.queued), num(s.inflight), num(s.items), num(s.failed), num(s.pages_per_s))
  local p = s.proxies
  if type(p) == "table" then
    text = text .. string.format(" | proxies %d live, %d cooling, %d retired", num(p.live), num(p.cooling),
      num(p.retired))
  end
  return text
end

-- p:update(s) -> true when it wrote a line, false when it was too soon (or quiet).
function Progress:update(s)
  args.check(1, s, "table", "update")
  if self.quiet or self.finished then return false end
  local now = self.clock()
  if self.tty then
    if self.last and now - self.last < TTY_GAP then return false end
    self.stream:write("\r", M.format(s), CLEAR_EOL)
    self.shown = true
  else
    if now - (self.last or self.started) < self.interval then return false end
    self.stream:write("forage: ", M.format(s), "\n")
  end
  self.stream:flush()
  self.last = now
  return true
end

-- p:clear(): on a terminal, erases the progress line so that a log line can be written
-- (log.new{ before = function() p:clear() end }); the next update redraws it.
function Progress:clear()
  if self.tty and self.shown then
    self.stream:write("\r", CLEAR_EOL)
    self.stream:flush()
    self.shown, self.last = false, nil
  end
end

-- p:finish(s): the last line, always written (unless quiet), ending the terminal's line.
function Progress:finish(s)
  args.check(1, s, "table", "finish")
  if self.quiet or self.finished then return end
  self.finished = true
  if self.tty then
    self.stream:write("\r", M.format(s), CLEAR_EOL, "\n")
  else
    self.stream:write("forage: ", M.format(s), "\n")
  end
  self.stream:flush()
end

-- True when stream is stdout or stderr, TERM says a terminal, and `test -t` agrees.
local function detect_tty(stream)
  local fd = stream == io.stderr and 2 or stream == io.stdout and 1 or nil
  local term = os.getenv("TERM")
  if not fd or not term or term == "" or term == "dumb" then return false end
  return os.execute("test -t " .. fd) == true
end

-- new{ stream = io.stderr, tty = nil (detected), interval = 5, quiet = false,
-- clock = forage.now } -> progress.
function M.new(opts)
  local fname = "forage.crawl.progress.new"
  opts = args.options(fname, opts, { stream = true, tty = true, interval = true, quiet = true, clock = true })
  local interval = opts.interval or 5
  if type(interval) ~= "number" or interval ~= interval or interval < 0 then
    args.bad_option(fname, "interval", "a non-negative number of seconds", interval)
  end
  if opts.tty ~= nil and type(opts.tty) ~= "boolean" then args.bad_option(fname, "tty", "a boolean", opts.tty) end
  if opts.clock ~= nil and type(opts.clock) ~= "function" then
    args.bad_option(fname, "clock", "a function", opts.clock)
  end
  local stream = opts.stream or io.stderr
  local tty = opts.tty
  if tty == nil then tty = not opts.quiet and detect_tty(stream) end
  local clock = opts.clock or forage.now
  return setmetatable({ stream = stream, tty = tty, interval = interval, quiet = opts.quiet == true,
                        clock = clock, started = clock() }, Progress)
end

return M
