-- The crawl benchmark's machinery: nginx (the origin), tinyproxy instances (the proxies), wrk
-- (the ceiling and the origin's capacity), and the measured run of one crawler.
--
-- Every server is started in the foreground (`nginx -g 'daemon off;'`, `tinyproxy -d`) as a
-- background job of a shell that prints its pid, listens on 127.0.0.1 only, keeps its config,
-- pid file and logs in the run's temporary directory, and is stopped by that pid.

local socket = require "socket"

local I = {}

I.NGINX = os.getenv("BENCH_NGINX") or "/usr/sbin/nginx"
I.TINYPROXY = os.getenv("BENCH_TINYPROXY") or "/usr/bin/tinyproxy"
I.WRK = os.getenv("BENCH_WRK") or "/usr/bin/wrk"
I.ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
I.NGINX_WORKERS = tonumber(os.getenv("CRAWL_NGINX_WORKERS") or "") or 1

local h -- bench/harness.lua, set by I.init

function I.init(harness) h = harness end

local function sh(cmd) return h.sh(cmd) end
local q = function(s) return h.quote(s) end

-- Starts argv in the background with its output in log; returns its pid.
function I.spawn(argv, log)
  local words = {}
  for i, a in ipairs(argv) do words[i] = q(a) end
  local f = assert(io.popen(string.format("%s >%s 2>&1 </dev/null & echo $!", table.concat(words, " "), q(log))))
  local pid = tonumber(f:read("l"))
  f:close()
  return assert(pid, "no pid for " .. argv[1])
end

local function alive(pid) return sh("kill -0 " .. pid .. " 2>/dev/null") end

-- Stops pid (TERM, then KILL after 2 s); waits until it is gone.
function I.stop(pid)
  if not pid or not alive(pid) then return end
  sh("kill " .. pid .. " 2>/dev/null")
  for i = 1, 200 do
    if not alive(pid) then return end
    if i == 100 then sh("kill -9 " .. pid .. " 2>/dev/null") end
    sh("sleep 0.02")
  end
end

-- A port on 127.0.0.1 nobody listens on now (picked at random among the ephemeral ones).
local used = {}
function I.free_port()
  for _ = 1, 100 do
    local port = math.random(20000, 32000) -- below Linux's ephemeral range: no client socket takes it
    if not used[port] then
      local s = socket.bind("127.0.0.1", port)
      if s then
        s:close()
        used[port] = true
        return port
      end
    end
  end
  error("no free port on 127.0.0.1")
end

-- Waits until something accepts on port (up to 5 s); false when nothing does.
local function listening(port)
  for _ = 1, 250 do
    local c = socket.connect("127.0.0.1", port)
    if c then
      c:close()
      return true
    end
    socket.sleep(0.02)
  end
  return false
end

-- ---------------------------------------------------------------------------------
-- The origin: nginx serving dir/www, each response held `latency` seconds first (echo_sleep,
-- then an internal redirect to the static files) when latency > 0.

local function nginx_conf(dir, port, latency, workers)
  local location = "location / { }"
  local load = ""
  if latency > 0 then
    load = "load_module " .. I.ECHO_MODULE .. ";\n"
    location = string.format("location / { echo_sleep %.3f; echo_exec @static; }\n    location @static { }", latency)
  end
  -- nginx run by root serves as nobody, who may not read a checkout's build/: stay root then.
  local user = sh("[ $(id -u) = 0 ]") and "user root root;\n" or ""
  return load .. user .. ([[
worker_processes WORKERS;
worker_rlimit_nofile 20000;
pid DIR/nginx.pid;
error_log DIR/nginx.error.log error;
events { worker_connections 16000; multi_accept on; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  default_type text/html;
  charset utf-8;
  client_body_temp_path DIR/tmp;
  proxy_temp_path DIR/tmp;
  fastcgi_temp_path DIR/tmp;
  uwsgi_temp_path DIR/tmp;
  scgi_temp_path DIR/tmp;
  server {
    listen 127.0.0.1:PORT backlog=4096;
    root DIR/www;
    LOCATION
  }
}
]]):gsub("WORKERS", tostring(workers)):gsub("DIR", dir):gsub("PORT", tostring(port)):gsub("LOCATION", location)
end

-- Starts nginx on dir/www; returns { url = "http://127.0.0.1:PORT", port, pid, latency, workers }.
function I.start_origin(dir, latency, workers)
  workers = workers or I.NGINX_WORKERS
  sh("mkdir -p " .. q(dir .. "/tmp"))
  for _ = 1, 5 do
    local port = I.free_port()
    local conf = string.format("%s/nginx-%d.conf", dir, port)
    h.write_file(conf, nginx_conf(dir, port, latency, workers))
    local pid = I.spawn({ I.NGINX, "-g", "daemon off;", "-e", dir .. "/nginx.error.log", "-p", dir, "-c", conf },
      dir .. "/nginx.out")
    if listening(port) and alive(pid) then
      return { url = "http://127.0.0.1:" .. port, port = port, pid = pid, latency = latency, workers = workers }
    end
    I.stop(pid)
  end
  error("nginx did not start: " .. tostring(h.read_file(dir .. "/nginx.error.log")), 0)
end

-- ---------------------------------------------------------------------------------
-- The proxies: n tinyproxy instances, each allowing max_clients connections at once.
-- Returns { urls = { "http://127.0.0.1:PORT", ... }, pids = {...}, file = dir/proxies-n.txt }.

local function tinyproxy_conf(port, max_clients, log)
  return string.format([[
Port %d
Listen 127.0.0.1
Timeout 60
MaxClients %d
LogFile "%s"
LogLevel Error
Allow 127.0.0.1
DisableViaHeader Yes
]], port, max_clients, log)
end

function I.start_proxies(dir, n, max_clients)
  local set = { urls = {}, pids = {}, ports = {} }
  for i = 1, n do
    local port = I.free_port()
    local conf = string.format("%s/tinyproxy-%d.conf", dir, port)
    h.write_file(conf, tinyproxy_conf(port, max_clients, string.format("%s/tinyproxy-%d.log", dir, port)))
    set.pids[i] = I.spawn({ I.TINYPROXY, "-d", "-c", conf }, string.format("%s/tinyproxy-%d.out", dir, port))
    set.ports[i] = port
    set.urls[i] = "http://127.0.0.1:" .. port
  end
  for i, port in ipairs(set.ports) do
    if not listening(port) then
      I.stop_proxies(set)
      error(string.format("tinyproxy %d of %d (port %d) did not start: %s", i, n, port,
        tostring(h.read_file(string.format("%s/tinyproxy-%d.out", dir, port)))), 0)
    end
  end
  set.file = string.format("%s/proxies-%d.txt", dir, n)
  h.write_file(set.file, table.concat(set.urls, "\n") .. "\n")
  return set
end

function I.stop_proxies(set)
  for _, pid in ipairs(set.pids) do
    if alive(pid) then sh("kill " .. pid .. " 2>/dev/null") end
  end
  for _, pid in ipairs(set.pids) do I.stop(pid) end
end

-- ---------------------------------------------------------------------------------
-- wrk: `threads` threads (default 1) and `conns` connections to each target for `seconds`,
-- every request a GET of one of the detail pages (round robin over `pages` of them). A target
-- is the origin itself (relative paths) or a proxy (absolute URLs: wrk sends the request line
-- it is given, which is what a forward proxy expects). One wrk process per target, all at once; returns the sum of
-- Requests/sec, the requests that were not 2xx, and the socket errors wrk counted
-- (tinyproxy closes every client connection after its response: wrk counts each as a read
-- error and reconnects).

local WRK_SCRIPT = [[
local i = 0
request = function()
  i = i %% %d + 1
  return wrk.format("GET", "%s/detail/" .. i)
end
]]

function I.wrk(dir, origin, targets, conns, seconds, pages, tag, threads)
  threads = math.min(threads or 1, conns)
  local script = string.format("%s/wrk-%s.lua", dir, tag)
  local prefix = targets[1] == origin.url and "" or origin.url
  h.write_file(script, string.format(WRK_SCRIPT, pages, prefix))
  local cmds = {}
  for i, target in ipairs(targets) do
    cmds[i] = string.format("%s -t%d -c%d -d%ds -s %s %s/ >%s 2>&1 &", q(I.WRK), threads, conns, seconds, q(script),
      q(target), q(string.format("%s/wrk-%s-%d.out", dir, tag, i)))
  end
  sh("ulimit -n 20000 2>/dev/null; " .. table.concat(cmds, "\n") .. "\nwait")
  local total, non2xx, errors, reqs = 0, 0, 0, 0
  for i = 1, #targets do
    local out = h.read_file(string.format("%s/wrk-%s-%d.out", dir, tag, i)) or ""
    local rate = tonumber(out:match("Requests/sec:%s+([%d.]+)"))
    if not rate then error("wrk gave no Requests/sec: " .. out:sub(1, 300), 0) end
    total = total + rate
    reqs = reqs + (tonumber(out:match("(%d+) requests in")) or 0)
    non2xx = non2xx + (tonumber(out:match("Non%-2xx or 3xx responses:%s+(%d+)")) or 0)
    for n in (out:match("Socket errors:([^\n]*)") or ""):gmatch("%d+") do errors = errors + tonumber(n) end
  end
  return { rate = total, requests = reqs, non2xx = non2xx, socket_errors = errors }
end

return I
