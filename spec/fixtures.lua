-- Local servers for the http spec, all on 127.0.0.1: nginx (http + https on a certificate made
-- here), two tinyproxy instances (open, and with BasicAuth), and a socket that never answers.
-- Every server is started in the background with a pid file and stopped by that pid.
local socket = require "socket"
local helpers = require "helpers"

local M = {}

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true
end

local read, write = helpers.read, helpers.write

-- A port nothing listens on right now (the kernel's pick, released at once).
local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- True once something accepts connections on port, within seconds.
local function wait_listening(port, seconds)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do
    local c = socket.tcp()
    c:settimeout(0.2)
    local ok = c:connect("127.0.0.1", port)
    c:close()
    if ok then return true end
    socket.sleep(0.05)
  end
  return false
end

local function kill_pidfile(path)
  local pid = read(path)
  pid = pid and pid:match("%d+")
  if pid then sh("kill " .. pid .. " 2>/dev/null") end
end

local function nginx_conf(dir, http_port, https_port)
  local user = sh("[ $(id -u) = 0 ]") and "user root root;\n" or ""
  return user .. ([[
worker_processes 1;
pid DIR/nginx.pid;
error_log DIR/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path DIR/tmp;
  proxy_temp_path DIR/tmp;
  fastcgi_temp_path DIR/tmp;
  uwsgi_temp_path DIR/tmp;
  scgi_temp_path DIR/tmp;
  default_type text/plain;
  gzip on;
  gzip_min_length 1;
  gzip_types text/plain;
  server {
    listen 127.0.0.1:HTTP;
    root DIR/www;
    location = /redirect { return 302 /page.txt; }
    location = /redirect2 { return 302 /redirect; }
    location = /loop { return 302 /loop; }
    location = /tofile { return 302 file:///etc/passwd; }
    location = /setcookie { add_header Set-Cookie "seen=1; Path=/"; return 302 /echocookie; }
    location = /echocookie { return 200 "cookie=$http_cookie"; }
    location = /echoua { return 200 "ua=$http_user_agent"; }
    location = /headers { add_header X-Twice a; add_header X-Twice b; return 200 "ok"; }
  }
  server {
    listen 127.0.0.1:HTTPS ssl;
    ssl_certificate DIR/cert.pem;
    ssl_certificate_key DIR/key.pem;
    root DIR/www;
  }
}
]]):gsub("DIR", dir):gsub("HTTPS", tostring(https_port)):gsub("HTTP", tostring(http_port))
end

local function tinyproxy_conf(dir, name, port, https_port, auth)
  return ([[
Port PORT
Listen 127.0.0.1
Allow 127.0.0.1
Timeout 30
MaxClients 200
LogFile "DIR/NAME.log"
LogLevel Error
PidFile "DIR/NAME.pid"
ConnectPort 443
ConnectPort HTTPS
]]):gsub("DIR", dir):gsub("NAME", name):gsub("HTTPS", tostring(https_port)):gsub("PORT", tostring(port))
    .. (auth and "BasicAuth user pass\n" or "")
end

-- Starts everything, filling fx (ports, urls, cert path, body of page.txt) as it goes, so
-- M.stop(fx) cleans up even after a failed start. Raises when a server cannot be started
-- (after retrying on port conflicts).
function M.start(fx)
  local dir = os.tmpname()
  os.remove(dir)
  fx.dir, fx.cert = dir, dir .. "/cert.pem"
  assert(sh("mkdir -p " .. dir .. "/www " .. dir .. "/tmp"))
  assert(sh(("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 " ..
    "-addext subjectAltName=IP:127.0.0.1 -days 1 -keyout %s/key.pem -out %s/cert.pem 2>/dev/null")
    :format(dir, dir)), "openssl could not make a certificate")
  fx.page = ("forage test page\n"):rep(2000)
  write(dir .. "/www/page.txt", fx.page)
  assert(sh("truncate -s 50M " .. dir .. "/www/big.bin"))

  for _ = 1, 5 do
    fx.http_port, fx.https_port = free_port(), free_port()
    write(dir .. "/nginx.conf", nginx_conf(dir, fx.http_port, fx.https_port))
    sh(("nginx -e %s/error.log -p %s -c %s/nginx.conf"):format(dir, dir, dir))
    if wait_listening(fx.http_port, 3) and wait_listening(fx.https_port, 1) then break end
    kill_pidfile(dir .. "/nginx.pid")
    fx.http_port = nil
  end
  assert(fx.http_port, "nginx did not start: " .. tostring(read(dir .. "/error.log")))

  for _, spec in ipairs { { "proxy", false }, { "authproxy", true } } do
    local name, auth = spec[1], spec[2]
    for _ = 1, 5 do
      local port = free_port()
      write(dir .. "/" .. name .. ".conf", tinyproxy_conf(dir, name, port, fx.https_port, auth))
      sh(("tinyproxy -c %s/%s.conf"):format(dir, name))
      if wait_listening(port, 3) then
        fx[name .. "_port"] = port
        break
      end
      kill_pidfile(dir .. "/" .. name .. ".pid")
    end
    assert(fx[name .. "_port"], "tinyproxy did not start: " .. tostring(read(dir .. "/" .. name .. ".log")))
  end

  -- accepts connections (the kernel's backlog) and never answers
  fx.stall = assert(socket.bind("127.0.0.1", 0))
  fx.stall_port = tonumber((select(2, fx.stall:getsockname())))
  fx.dead_port = free_port()

  fx.base = "http://127.0.0.1:" .. fx.http_port
  fx.tls = "https://127.0.0.1:" .. fx.https_port
  fx.proxy = "http://127.0.0.1:" .. fx.proxy_port
  return fx
end

-- A one-trick server on 127.0.0.1 in a child process: for every connection it reads the
-- request head, then sends `answer` (nothing when nil) and closes. Returns its port and a
-- function that stops it (by its pid) and reaps it. No timing: a client that connects is
-- served whenever the child gets to it.
function M.serve(answer)
  local forage = require "forage"
  local server = assert(socket.bind("127.0.0.1", 0))
  local port = tonumber((select(2, server:getsockname())))
  local child = forage.process(function()
    while true do
      local conn = server:accept()
      if conn then
        conn:settimeout(10)
        repeat local line = conn:receive("*l") until line == "" or line == nil
        if answer then conn:send(answer) end
        conn:close()
      end
    end
  end)
  child:start()
  server:close()
  return port, function()
    child:kill()
    child:join(10)
  end
end

-- Stops every server fx started and removes its files; safe on a partial fx.
function M.stop(fx)
  if not (fx and fx.dir) then return end
  if fx.stall then fx.stall:close() end
  kill_pidfile(fx.dir .. "/nginx.pid")
  kill_pidfile(fx.dir .. "/proxy.pid")
  kill_pidfile(fx.dir .. "/authproxy.pid")
  socket.sleep(0.1)
  sh("rm -rf " .. fx.dir)
end

return M
