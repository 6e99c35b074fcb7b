-- The fetch section of `make bench`: forage.http's client with 50 transfers in flight
-- against wrk (-t2 -c50) on the same small static page from a local nginx (127.0.0.1, an
-- ephemeral port, keep-alive on, one worker), which the section starts and stops by pid file.
--
-- As a module (run.lua): returns a function(h) -> rows, h being bench/harness.lua.
-- As a script: `lua5.4 bench/fetch_bench.lua NAME` runs one forage measurement in this fresh
-- process and prints it as JSON; the URL comes in FORAGE_FETCH_URL.

local CONCURRENCY = 50
local SECONDS = 3
local PAGE_BYTES = 4096
local TARGET = 0.5 -- forage's requests/s at least half of wrk's
local NGINX = os.getenv("BENCH_NGINX") or "/usr/sbin/nginx"
local WRK = os.getenv("BENCH_WRK") or "/usr/bin/wrk"

-- ---------------------------------------------------------------------------------
-- The forage measurement (runs in a process of its own)

local trials = {}

function trials.fetch(forage)
  local url = assert(os.getenv("FORAGE_FETCH_URL"), "FORAGE_FETCH_URL is not set")
  local seconds = tonumber(os.getenv("FORAGE_FETCH_SECONDS") or "") or SECONDS
  local c = forage.http.client { max = CONCURRENCY }
  local ok, bad, bytes, first_err = 0, 0, 0, nil
  local deadline -- nil while warming up
  local function on_response(r, message)
    if r and r.status == 200 then
      if deadline then
        ok = ok + 1
        bytes = bytes + #r.body
      end
    else
      bad = bad + 1
      first_err = first_err or (r and ("status " .. r.status)) or message
    end
    -- keep CONCURRENCY in flight until the clock runs out
    if not deadline or forage.now() < deadline then
      c:submit({ url = url }, on_response)
    end
  end
  -- Warm-up: one round of CONCURRENCY requests opens the connections, untimed.
  local warm = 0
  for _ = 1, CONCURRENCY do
    c:submit({ url = url }, function(r, message)
      warm = warm + 1
      if not (r and r.status == 200) then
        bad = bad + 1
        first_err = first_err or (r and ("status " .. r.status)) or message
      end
    end)
  end
  c:run()
  if bad > 0 then error("warm-up failed: " .. tostring(first_err)) end
  local t0 = forage.now()
  deadline = t0 + seconds
  for _ = 1, CONCURRENCY do c:submit({ url = url }, on_response) end
  c:run()
  local elapsed = forage.now() - t0
  c:close()
  if bad > 0 then
    error(string.format("%d request(s) failed, the first: %s", bad, tostring(first_err)))
  end
  return { seconds = elapsed, requests = ok, rate = ok / elapsed, bytes = bytes, warm = warm }
end

-- ---------------------------------------------------------------------------------
-- The section (in run.lua's process): nginx up, interleaved trials, nginx down.

-- The harness's shell and file helpers, set when the section runs (harness.lua).
local sh, read, write

local function nginx_conf(dir, port)
  local user = sh("[ $(id -u) = 0 ]") and "user root root;\n" or ""
  return user .. ([[
worker_processes 1;
daemon on;
pid DIR/nginx.pid;
error_log DIR/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  client_body_temp_path DIR/tmp;
  proxy_temp_path DIR/tmp;
  fastcgi_temp_path DIR/tmp;
  uwsgi_temp_path DIR/tmp;
  scgi_temp_path DIR/tmp;
  default_type text/html;
  server {
    listen 127.0.0.1:PORT;
    root DIR/www;
  }
}
]]):gsub("DIR", dir):gsub("PORT", tostring(port))
end

local function page()
  local out = { "<!DOCTYPE html>\n<html><head><title>forage fetch bench</title></head><body>\n" }
  local n = 0
  while #table.concat(out) < PAGE_BYTES - 40 do
    n = n + 1
    out[#out + 1] = string.format('<p class="row">row %04d of the fetch bench page</p>\n', n)
  end
  out[#out + 1] = "</body></html>\n"
  return table.concat(out)
end

local function stop_nginx(dir)
  local pid = (read(dir .. "/nginx.pid") or ""):match("%d+")
  if pid then
    sh("kill " .. pid .. " 2>/dev/null")
    for _ = 1, 50 do -- up to 1 s for it to go
      if not sh("kill -0 " .. pid .. " 2>/dev/null") then break end
      sh("sleep 0.02")
    end
  end
end

-- Starts nginx on a port picked at random among the ephemeral ones (retried when taken);
-- returns the port, or raises with nginx's error log.
local function start_nginx(h, forage, dir)
  math.randomseed(os.time(), tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0)
  for _ = 1, 8 do
    local port = math.random(32768, 60999)
    write(dir .. "/nginx.conf", nginx_conf(dir, port))
    if sh(string.format("%s -e %s -p %s -c %s 2>/dev/null", NGINX, h.quote(dir .. "/error.log"), h.quote(dir),
      h.quote(dir .. "/nginx.conf"))) then
      local url = string.format("http://127.0.0.1:%d/page.html", port)
      for _ = 1, 60 do
        local r = forage.http.get(url, { timeout = 1 })
        if r and r.status == 200 then return port end
        sh("sleep 0.05")
      end
    end
    stop_nginx(dir)
  end
  error("nginx did not start: " .. tostring(read(dir .. "/error.log")), 0)
end

local function section(h)
  sh, read, write = h.sh, h.read_file, h.write_file
  local forage = require "forage"
  local tmp = h.first_line { "mktemp", "-d", "/tmp/forage-fetch-bench.XXXXXX" }
  if not tmp:match("^/tmp/forage%-fetch%-bench%.") then error("mktemp failed: " .. tmp) end
  local rows = {}
  local ok, err = pcall(function()
    assert(sh("mkdir -p " .. h.quote(tmp .. "/www") .. " " .. h.quote(tmp .. "/tmp")))
    local body = page()
    write(tmp .. "/www/page.html", body)
    local port = start_nginx(h, forage, tmp)
    local url = string.format("http://127.0.0.1:%d/page.html", port)

    -- wrk's side: a tiny shell wrapper that turns "Requests/sec:" into the JSON h.trial reads.
    local wrk_sh = string.format([[
out=$(%s -t2 -c%d -d%ds %s 2>&1) || { echo "$out"; exit 1; }
rate=$(printf '%%s\n' "$out" | awk '/^Requests\/sec:/ { print $2 }')
[ -n "$rate" ] || { echo "$out"; echo "no Requests/sec in wrk's output"; exit 1; }
non2xx=$(printf '%%s\n' "$out" | awk '/Non-2xx or 3xx responses:/ { print $NF }')
errs=$(printf '%%s\n' "$out" | awk '/Socket errors:/ { print }' | tr -d '\n' | tr '"' "'")
printf '{"rate":%%s,"non2xx":%%s,"errors":"%%s"}\n' "$rate" "${non2xx:-0}" "$errs"
]], h.quote(WRK), CONCURRENCY, SECONDS, h.quote(url))

    local res = h.pairs(
      { "env", "FORAGE_FETCH_URL=" .. url, "FORAGE_FETCH_SECONDS=" .. SECONDS, h.lua, h.dir .. "/fetch_bench.lua",
        "fetch" },
      { "sh", "-c", wrk_sh },
      "rate", "high")
    local w = res.peer_best
    if w and ((tonumber(w.non2xx) or 0) > 0 or (w.errors or "") ~= "") then
      res.err = res.err or string.format("wrk: %s non-2xx responses %s", tostring(w.non2xx), w.errors or "")
    end
    local row = h.row(string.format("GET %d B page, %d in flight ~%d s, forage vs wrk -t2 -c%d, req/s",
      #body, CONCURRENCY, SECONDS, CONCURRENCY), res, { format = h.rate, better = "high", target = TARGET })
    for i, note in ipairs(row.notes) do row.notes[i] = note:gsub("| python ", "| wrk ") end
    table.insert(row.notes, 1, string.format("nginx %s on %s: 1 worker, keep-alive, access_log off, "
      .. "static page.html; the python column is wrk", h.first_line { NGINX, "-v" }:match("nginx/%S+") or "?", url))
    table.insert(row.notes, 2, "nginx shares the 2 cores with the client (forage: one process; wrk: 2 threads); "
      .. "only responses with status 200 are counted")
    rows[#rows + 1] = row
  end)
  stop_nginx(tmp)
  sh("rm -rf " .. h.quote(tmp))
  if not ok then error(err, 0) end
  return rows
end

-- ---------------------------------------------------------------------------------
-- Script mode: one forage measurement, printed as JSON.

if arg and arg[0] and arg[0]:match("fetch_bench%.lua$") then
  local dir = arg[0]:match("^(.*)/[^/]*$") or "."
  package.path = dir .. "/?.lua;" .. package.path
  require("harness").run_trial(trials, "bench/fetch_bench.lua")
end

return section
