-- What the crash-safe crawl's chaos specs share (spec/crawl_state_spec.lua, and the long
-- runs of make check-all in spec/long/crawl_state_long.lua): the checkout's paths for a
-- `forage crawl` process, the spider file they run, and ways to find and wait for its
-- processes. M.limit: the seconds a wait may last before the spec fails (a hang, not a
-- slow machine); each spec file sets its own.
local forage = require "forage"
local helpers = require "helpers"

local M = { limit = 60 }

M.ROOT = assert(os.getenv("PWD"), "the specs run from the checkout")
M.LUA_PATH = M.ROOT .. "/lua/?.lua;" .. M.ROOT .. "/lua/?/init.lua;;"
M.LUA_CPATH = M.ROOT .. "/?.so;;"

function M.quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

function M.tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. M.quote(dir)))
  return dir
end

-- The spider. The site's URL and its number of list pages come from the environment, so
-- that the file, whose text the state's hash names, is the same in every run of a spec.
M.SPIDER = [[
local site = assert(os.getenv("CHAOS_SITE"), "CHAOS_SITE is not set")
local start = {}
for i = 1, assert(tonumber(os.getenv("CHAOS_PAGES")), "CHAOS_PAGES is not set") do
  start[i] = site .. "/page/" .. i
end
return {
  name = "chaos",
  start = start,
  workers = 2, concurrency = 8,
  parse = function(page) page:follow(page:css("a.name::attr(href)"), "detail") end,
  detail = function(page)
    return { url = page.url, directors = page:css("div.directors p.name::text") }
  end,
}
]]

function M.count_lines(path)
  local text = helpers.read(path)
  if not text then return 0 end
  local _, n = text:gsub("\n", "")
  return n
end

local function sorted_pids(command)
  local p = assert(io.popen(command))
  local pids = {}
  for line in p:lines() do pids[#pids + 1] = tonumber(line) end
  p:close()
  table.sort(pids)
  return pids
end

-- The pids of the processes whose command line holds text (the state directory's path
-- names one crawl's parent and workers). `exec`: pgrep leaves itself out, not a shell.
-- Without LD_PRELOAD: under make check's AddressSanitizer preload, procps' pgrep hangs in a
-- futex at start (the tools are not what is being sanitized; forage is).
function M.processes_of(text)
  return sorted_pids("exec env -u LD_PRELOAD pgrep -f -- " .. M.quote(text))
end

function M.children_of(pid)
  return sorted_pids("exec env -u LD_PRELOAD pgrep -P " .. pid)
end

-- True when process pid has path open.
function M.has_open(pid, path)
  local p = assert(io.popen(("exec env -u LD_PRELOAD readlink /proc/%d/fd/* 2>/dev/null"):format(pid)))
  local found = false
  for line in p:lines() do found = found or line == path end
  p:close()
  return found
end

-- `forage status --state dir`: stdout, stderr, exit code.
function M.status(dir)
  return helpers.forage_cli("status --state " .. M.quote(dir))
end

-- The items the state in dir has committed (0 before its first commit, or with no state).
function M.committed_items(dir)
  local text, _, code = M.status(dir)
  return code == 0 and tonumber(text:match("pages %d+, items (%d+)")) or 0
end

-- Waits until cond() is true; fails naming `what` after M.limit seconds.
function M.wait_until(what, cond)
  local deadline = forage.now() + M.limit
  while not cond() do
    if forage.now() > deadline then error(("still waiting for %s after %d s"):format(what, M.limit), 2) end
    forage.sleep(0.005)
  end
end

-- Waits until no process of the crawl whose state is in dir is left: a dead parent's
-- workers leave by themselves, when they find their pipe closed.
function M.no_process_left(dir)
  local left
  local ok, err = pcall(M.wait_until, "the crawl's processes to leave", function()
    left = M.processes_of(dir)
    return #left == 0
  end)
  assert(ok, ("%s: processes left: %s"):format(tostring(err), table.concat(left or {}, " ")))
end

-- A `forage ARGS` process (a crawl host, or any forage command) in the background, in dir,
-- in a process group of its own (setsid: its pgid is its pid), so that kill -9 reaches its
-- workers too; env: { NAME = value } added to its environment; poll: called in every wait
-- (the gates of the multi-host specs). Its stdout and stderr go to files in dir.
local Host = {}
Host.__index = Host
local hosts_started = 0

function M.host(dir, args, env, poll)
  hosts_started = hosts_started + 1
  local n = hosts_started
  local host = setmetatable({ err = ("%s/stderr-%d.txt"):format(dir, n), out = ("%s/stdout-%d.txt"):format(dir, n),
    args = args, poll = poll }, Host)
  local vars = {}
  for name, value in pairs(env or {}) do vars[#vars + 1] = name .. "=" .. M.quote(tostring(value)) end
  local cmd = ("cd %s && echo $$ && exec setsid env %s LUA_PATH=%s LUA_CPATH=%s lua5.4 %s/bin/forage %s "
    .. "</dev/null >%s 2>%s"):format(M.quote(dir), table.concat(vars, " "), M.quote(M.LUA_PATH),
    M.quote(M.LUA_CPATH), M.quote(M.ROOT), args, M.quote(host.out), M.quote(host.err))
  host.pipe = assert(io.popen(cmd))
  host.pid = assert(tonumber(host.pipe:read("l")), "no pid from the shell")
  return host
end

function Host:stderr()
  return helpers.read(self.err) or ""
end

function Host:stdout()
  return helpers.read(self.out) or ""
end

-- Sends signal (a name: INT, TERM, KILL) to the host's parent, or to its whole process
-- group with group (as a terminal's Ctrl-C does).
function Host:signal(name, group)
  assert(os.execute(("kill -%s %s%d"):format(name, group and "-" or "", self.pid)))
end

-- kill -9 of the host's whole process group: its parent and its workers.
function Host:kill_tree()
  self:signal("KILL", true)
end

-- Reaps the host (ended, or ended now with SIGKILL to its group); its exit code as a shell
-- tells it (128 + N for signal N), and its stderr.
function Host:close()
  if not self.code then
    if helpers.exists(self.pid) then os.execute(("kill -KILL -%d 2>/dev/null"):format(self.pid)) end
    local _, how, n = self.pipe:close()
    self.code = how == "signal" and 128 + n or n
  end
  return self.code, self:stderr()
end

-- Waits for the host to end by itself (limit, default M.limit, seconds at most: then it is
-- killed and the spec fails); its exit code and stderr.
function Host:wait(limit)
  local deadline = forage.now() + (limit or M.limit)
  while helpers.exists(self.pid) do
    if self.poll then self.poll() end
    if forage.now() > deadline then
      self:close()
      error(("forage %s (pid %d) still running after %d s; stderr:\n%s"):format(self.args, self.pid,
        limit or M.limit, self:stderr()), 2)
    end
    forage.sleep(0.005)
  end
  return self:close()
end

-- Waits until cond() is true while the host runs; fails when it ends first, or after M.limit s.
function Host:wait_for(what, cond)
  local deadline = forage.now() + M.limit
  while not cond() do
    if not helpers.exists(self.pid) then
      local code, err = self:close()
      error(("the crawl ended (exit %s) before %s; stderr:\n%s"):format(tostring(code), what, err), 2)
    end
    if forage.now() > deadline then error(("still waiting for %s after %d s"):format(what, M.limit), 2) end
    if self.poll then self.poll() end
    forage.sleep(0.005)
  end
end

-- The spider of the multi-host specs (spec/crawl_redis_spec.lua): M.SPIDER's, with its
-- proxies (CHAOS_PROXIES, space-separated URLs) and a gate (CHAOS_GATE, a URL fetched as
-- the first start request: see M.gate) from the environment too, so that every host of a
-- crawl runs the same file (the same hash) whatever its proxies and ports.
M.SPIDER_SHARED = [[
local site = assert(os.getenv("CHAOS_SITE"), "CHAOS_SITE is not set")
local start = {}
local gate = os.getenv("CHAOS_GATE")
if gate and gate ~= "" then start[1] = gate end
for i = 1, assert(tonumber(os.getenv("CHAOS_PAGES")), "CHAOS_PAGES is not set") do
  start[#start + 1] = site .. "/page/" .. i
end
local proxies = {}
for url in (os.getenv("CHAOS_PROXIES") or ""):gmatch("%S+") do proxies[#proxies + 1] = url end
return {
  name = "chaos",
  start = start,
  proxies = #proxies > 0 and proxies or nil,
  workers = 2, concurrency = 8,
  parse = function(page) page:follow(page:css("a.name::attr(href)"), "detail") end,
  detail = function(page)
    return { url = page.url, directors = page:css("div.directors p.name::text") }
  end,
}
]]

-- A gate: an HTTP server on a loopback port, in this process, that holds every request it
-- gets until gate:open() (then answers it, and every later one, with an empty page). A
-- crawl whose start holds gate.url cannot finish while the gate is shut, whatever the
-- machine's speed: the point where a spec acts "before the end" is then certain. The
-- spec calls gate:poll() in its waits (nothing answers otherwise); gate:close() ends it.
local Gate = {}
Gate.__index = Gate

function M.gate()
  local socket = require "socket"
  local server = assert(socket.bind("127.0.0.1", 0))
  server:settimeout(0)
  local _, port = server:getsockname()
  return setmetatable({ server = server, url = ("http://127.0.0.1:%d/gate"):format(port), held = {},
    requests = 0, is_open = false }, Gate)
end

local GATE_PAGE = "<html><body><p>gate</p></body></html>"
local GATE_REPLY = ("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s")
  :format(#GATE_PAGE, GATE_PAGE)

local function gate_answer(client)
  -- the request's head first (a close with unread bytes would reset the connection)
  client:settimeout(1)
  repeat
    local line = client:receive("*l")
  until not line or line == ""
  client:send(GATE_REPLY)
  client:close()
end

-- Takes the connections that came; answers them when the gate is open. Returns the number
-- of requests the gate has had.
function Gate:poll()
  if not self.server then return self.requests end
  while true do
    local client = self.server:accept()
    if not client then break end
    self.requests = self.requests + 1
    self.held[#self.held + 1] = client
  end
  if self.is_open then
    for i, client in ipairs(self.held) do
      gate_answer(client)
      self.held[i] = nil
    end
  end
  return self.requests
end

function Gate:open()
  self.is_open = true
  self:poll()
end

function Gate:close()
  for i, client in ipairs(self.held) do
    client:close()
    self.held[i] = nil
  end
  if self.server then self.server:close() end
  self.server = nil
end
Gate.__close = Gate.close

return M
