-- `make bench`: forage against its Python peers on this machine, section by section.
--
--   lua5.4 bench/run.lua [SECTION...]        (LUA_PATH/LUA_CPATH as the Makefile sets them)
--
-- A section is a module bench/NAME.lua returning a function(harness) -> rows (see
-- bench/harness.lua); add one to SECTIONS. Each figure is the best of BENCH_ROUNDS (3)
-- interleaved forage/Python pairs; the ratio says how many times better forage did.
-- The exit status is 0 when every measurement ran, whatever the ratios; 1 when one failed.

local SECTIONS = { "pool_bench", "queue_bench", "shared_bench", "html_bench", "fetch_bench", "frontier_bench",
  "state_bench", "crawl_bench", "redis_bench", "manager_bench" }

local dir = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$")) or "."
package.path = dir .. "/?.lua;" .. package.path
local h = require "harness"

local function out(fmt, ...)
  io.write(string.format(fmt, ...), "\n")
  io.stdout:flush()
end

local function width(rows, key, title)
  local w = #title
  for _, r in ipairs(rows) do w = math.max(w, #tostring(r[key])) end
  return w
end

local function print_rows(title, rows)
  local cells = {}
  for i, r in ipairs(rows) do
    cells[i] = {
      name = r.name,
      forage = r.forage,
      peer = r.peer,
      ratio = r.ratio and string.format("%.2fx", r.ratio) or "-",
      target = string.format(">= %gx", r.target),
      result = r.pass and "PASS" or "FAIL",
    }
  end
  local cols = {
    { "name", title, "-" }, { "forage", "forage", "" }, { "peer", "python", "" },
    { "ratio", "ratio", "" }, { "target", "target", "-" }, { "result", "", "-" },
  }
  local fmts, heads, rule = {}, {}, {}
  for k, c in ipairs(cols) do
    local w = width(cells, c[1], c[2])
    fmts[k] = "%" .. c[3] .. w .. "s"
    heads[k] = string.format(fmts[k], c[2])
    rule[k] = string.rep("-", w)
  end
  out("%s", table.concat(heads, "  "))
  out("%s", table.concat(rule, "  "))
  for i, cell in ipairs(cells) do
    local line = {}
    for k, c in ipairs(cols) do line[k] = string.format(fmts[k], cell[c[1]]) end
    out("%s", table.concat(line, "  "))
    for _, note in ipairs(rows[i].notes or {}) do out("    %s", note) end
  end
end

local function main(wanted)
  local started = os.time()
  local forage_ok, forage = pcall(require, "forage")
  out("forage %s (wire %s) | %s | %s | nproc %s | %s",
    forage_ok and forage.version or "?", forage_ok and forage.wire_version or "?",
    h.first_line { h.lua, "-v" }:match("^Lua %S+") or _VERSION, h.first_line { h.python, "--version" },
    h.first_line { "nproc" }, h.first_line { "uname", "-srm" })
  out("each figure: best of %d interleaved forage/python runs, each run a fresh process", h.rounds)
  if not forage_ok then
    out("cannot load forage (build it with `make`; LUA_PATH/LUA_CPATH as in the Makefile):\n%s", forage)
    return false
  end
  local sections = #wanted > 0 and wanted or SECTIONS
  local total, passed, broken = 0, 0, 0
  for _, name in ipairs(sections) do
    if not name:match("_bench$") then name = name .. "_bench" end -- `run.lua pool` is enough
    out("")
    local ok, rows = pcall(function() return require(name)(h) end)
    if not ok then
      out("section %s: ERROR %s", name, tostring(rows))
      broken = broken + 1
    else
      print_rows((name:gsub("_bench$", "")), rows)
      for _, r in ipairs(rows) do
        total = total + 1
        if r.pass then passed = passed + 1 end
        if r.err then broken = broken + 1 end
      end
    end
  end
  out("")
  out("%d of %d targets met; %d measurement(s) failed to run; %d s", passed, total, broken, os.time() - started)
  return broken == 0
end

os.exit(main(arg or {}) and 0 or 1)
