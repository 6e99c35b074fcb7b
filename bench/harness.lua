-- Shared helpers of the benchmark sections (bench/*_bench.lua): running one measurement
-- in a fresh process, best of N interleaved pairs, small JSON, and the rows run.lua prints.
--
-- Every measurement runs in a process of its own (a forage trial is `lua5.4 bench/X_bench.lua
-- NAME`, a peer is `/usr/bin/python3 bench/X_peer.py NAME`) that prints one JSON object as
-- its last line: neither side forks from a heap an earlier measurement left behind.

local H = {}

H.lua = arg and arg[-1] or "lua5.4"
H.python = os.getenv("BENCH_PYTHON") or "/usr/bin/python3"
H.dir = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$")) or "."
H.rounds = tonumber(os.getenv("BENCH_ROUNDS") or "") or 3
H.trial_timeout = 20 -- seconds a measurement may take; nothing may hang `make bench`

-- ---------------------------------------------------------------------------------
-- JSON: enough for flat objects of numbers, strings, booleans and lists of them.

local function encode(v, out)
  local t = type(v)
  if t == "table" then
    if #v > 0 or next(v) == nil then
      out[#out + 1] = "["
      for i, x in ipairs(v) do
        if i > 1 then out[#out + 1] = "," end
        encode(x, out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        encode(k, out)
        out[#out + 1] = ":"
        encode(v[k], out)
      end
      out[#out + 1] = "}"
    end
  elseif t == "string" then
    out[#out + 1] = '"' .. v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      out[#out + 1] = "null"
    elseif math.type(v) == "integer" then
      out[#out + 1] = string.format("%d", v)
    else
      out[#out + 1] = string.format("%.17g", v)
    end
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif v == nil then
    out[#out + 1] = "null"
  else
    error("json: cannot encode a " .. t)
  end
end

function H.json_encode(v)
  local out = {}
  encode(v, out)
  return table.concat(out)
end

local escapes = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }

-- Returns the value decoded from s, or raises with the position of the trouble.
function H.json_decode(s)
  local pos = 1
  local function fail(what) error(string.format("json: %s at byte %d", what, pos), 0) end
  local function skip() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local value
  local function str()
    local out = {}
    pos = pos + 1
    while true do
      local c = s:sub(pos, pos)
      if c == "" then fail("unterminated string") end
      if c == '"' then pos = pos + 1 break end
      if c == "\\" then
        local e = s:sub(pos + 1, pos + 1)
        if e == "u" then
          local hex = s:match("^%x%x%x%x", pos + 2) or fail("bad \\u escape")
          out[#out + 1] = utf8.char(tonumber(hex, 16))
          pos = pos + 6
        else
          out[#out + 1] = escapes[e] or fail("bad escape")
          pos = pos + 2
        end
      else
        out[#out + 1] = c
        pos = pos + 1
      end
    end
    return table.concat(out)
  end
  function value()
    skip()
    local c = s:sub(pos, pos)
    if c == "{" then
      local t = {}
      pos = pos + 1
      skip()
      if s:sub(pos, pos) == "}" then pos = pos + 1 return t end
      while true do
        skip()
        if s:sub(pos, pos) ~= '"' then fail("expected a key") end
        local k = str()
        skip()
        if s:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        t[k] = value()
        skip()
        c = s:sub(pos, pos)
        pos = pos + 1
        if c == "}" then return t end
        if c ~= "," then fail("expected ',' or '}'") end
      end
    elseif c == "[" then
      local t = {}
      pos = pos + 1
      skip()
      if s:sub(pos, pos) == "]" then pos = pos + 1 return t end
      while true do
        t[#t + 1] = value()
        skip()
        c = s:sub(pos, pos)
        pos = pos + 1
        if c == "]" then return t end
        if c ~= "," then fail("expected ',' or ']'") end
      end
    elseif c == '"' then
      return str()
    else
      local word = s:match("^[%w%.%+%-]+", pos) or fail("unexpected character")
      pos = pos + #word
      if word == "true" then return true end
      if word == "false" then return false end
      if word == "null" then return nil end
      return tonumber(word) or fail("bad number '" .. word .. "'")
    end
  end
  local v = value()
  skip()
  if pos <= #s then fail("trailing bytes") end
  return v
end

-- ---------------------------------------------------------------------------------
-- Processes

function H.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs argv (a list) under a timeout; returns its stdout+stderr and whether it exited 0.
function H.capture(argv, timeout)
  local words = {}
  for i, a in ipairs(argv) do words[i] = H.quote(a) end
  local cmd = string.format("timeout -k 5 %d %s 2>&1", timeout or H.trial_timeout, table.concat(words, " "))
  local f = assert(io.popen(cmd, "r"))
  local out = f:read("a")
  local ok, _, code = f:close()
  return out, ok, code
end

-- Runs one measurement in its own process; returns the JSON object it printed last, or
-- nil and what went wrong (its output, trimmed).
function H.trial(argv)
  local out, ok, code = H.capture(argv)
  local last
  for line in out:gmatch("[^\n]+") do
    if line:match("^%s*{") then last = line end
  end
  if ok and last then
    local good, v = pcall(H.json_decode, last)
    if good then return v end
    return nil, v
  end
  local why = code == 124 and string.format("timed out after %d s", H.trial_timeout) or ("exit " .. tostring(code))
  -- The line that says what happened: a Lua error's first, or else the last (Python's).
  local first_lua, last_line
  for line in out:gmatch("[^\n]+") do
    if not first_lua and line:match("^%S*lua[%d.]*: ") then first_lua = line end
    if line:match("%S") then last_line = line end
  end
  local what = first_lua or last_line or "(no output)"
  if #what > 300 then what = what:sub(1, 300) .. "..." end
  return nil, string.format("%s: %s", why, what)
end

-- One line of a command's output, or "?".
function H.first_line(argv)
  local out = H.capture(argv, 10)
  return out:match("^%s*([^\n]*)") or "?"
end

-- Best of H.rounds interleaved pairs: forage's trial, then the peer's, round after round,
-- so a noisy stretch of the machine hits both sides. field names the figure in each JSON
-- result; better is "high" (a rate) or "low" (a time, a size).
-- Returns { forage = best, peer = best, forage_runs = {...}, peer_runs = {...},
-- forage_best = the JSON result of forage's best run, peer_best = the peer's, err = ... }.
function H.pairs(forage_argv, peer_argv, field, better)
  local res = { forage_runs = {}, peer_runs = {}, forage_results = {}, peer_results = {} }
  local function keep(side, v, err)
    if not v then
      res.err = res.err or string.format("%s: %s", side, err)
      return
    end
    local x = tonumber(v[field])
    if not x then
      res.err = res.err or string.format("%s: no '%s' in its result", side, field)
      return
    end
    table.insert(res[side .. "_runs"], x)
    table.insert(res[side .. "_results"], v)
    local best = res[side]
    if best == nil or (better == "high" and x > best) or (better == "low" and x < best) then
      res[side], res[side .. "_best"] = x, v
    end
  end
  -- A side that failed once (an error, a timeout) is not run again: the bench stays short.
  local failed = {}
  local function run(side, argv)
    if failed[side] then return end
    local v, err = H.trial(argv)
    if not v then failed[side] = true end
    keep(side, v, err)
  end
  for _ = 1, H.rounds do
    run("forage", forage_argv)
    run("peer", peer_argv)
  end
  return res
end

-- ---------------------------------------------------------------------------------
-- Rows: what a section returns and run.lua prints.
--
-- { name, forage = "figure", peer = "figure", ratio = x, target = x, pass = bool,
--   err = "why a measurement did not run" or nil, notes = { "..." } }.
-- ratio is how many times better forage did (higher is better), whichever way the unit goes.

-- A row from a H.pairs result: opts.format formats a figure, opts.better says which way is up.
function H.row(name, res, opts)
  local row = { name = name, target = opts.target, notes = {} }
  local fmt = opts.format
  row.forage = res.forage and fmt(res.forage) or "-"
  row.peer = res.peer and fmt(res.peer) or "-"
  if res.forage and res.peer and res.forage > 0 and res.peer > 0 then
    row.ratio = opts.better == "high" and res.forage / res.peer or res.peer / res.forage
  end
  row.err = res.err
  row.pass = row.ratio ~= nil and row.ratio >= opts.target and not res.err
  local function runs(list)
    local s = {}
    for i, x in ipairs(list) do s[i] = fmt(x) end
    return #s > 0 and table.concat(s, ", ") or "-"
  end
  row.notes[#row.notes + 1] = string.format("runs: forage %s | python %s",
    runs(res.forage_runs), runs(res.peer_runs))
  if res.err then row.notes[#row.notes + 1] = "ERROR " .. res.err:gsub("\n", "\n      ") end
  return row
end

-- 1234567.8 -> "1,234,568"
function H.thousands(x)
  local s = string.format("%.0f", x)
  local int = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (int:gsub("^,", ""):gsub("^%-,", "-"))
end

function H.rate(x) return H.thousands(x) .. "/s" end
function H.ms(x) return string.format("%.1f ms", x * 1000) end
function H.kb(x) return H.thousands(x) .. " kB" end

-- Pss of a process in kB, from /proc/PID/smaps_rollup; nil and a message when unreadable.
function H.pss_kb(pid)
  local f, err = io.open(string.format("/proc/%d/smaps_rollup", pid), "r")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  local kb = text:match("\nPss:%s+(%d+) kB") or text:match("^Pss:%s+(%d+) kB")
  if not kb then return nil, "no Pss line for pid " .. pid end
  return tonumber(kb)
end

function H.sleep(seconds)
  os.execute(string.format("sleep %.3f", seconds))
end

-- True when the shell command exits 0.
function H.sh(cmd)
  return os.execute(cmd) == true
end

-- The bytes of a file, or nil when it cannot be read.
function H.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

function H.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- Script mode of a section: runs the forage trial named by arg[1] in this fresh process
-- and prints its result as JSON (what H.trial reads). Never returns.
function H.run_trial(trials, script)
  local name = arg[1]
  if not trials[name] then
    local names = {}
    for k in pairs(trials) do names[#names + 1] = k end
    table.sort(names)
    io.stderr:write("usage: lua5.4 ", script, " ", table.concat(names, "|"), "\n")
    os.exit(2)
  end
  local result = trials[name](require "forage", H)
  result.bench = name
  io.write(H.json_encode(result), "\n")
  os.exit(0)
end

return H
