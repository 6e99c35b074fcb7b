-- forage.redis (src/redis.c) against a real redis-server (spec/redis_server.lua starts one per
-- describe, or per test where the test kills or reconfigures it).
local forage = require "forage"
local redis = require "forage.redis"
local socket = require "socket"
local helpers = require "helpers"
local redis_server = require "redis_server"

-- The fds this process has open.
local function open_fds()
  local n = 0
  local p = assert(io.popen("exec ls /proc/" .. forage.getpid() .. "/fd"))
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n
end

-- A loopback port nothing listens on (the kernel's pick, released at once).
local function closed_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return assert(tonumber(port))
end

local function raises(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok)
  assert.matches(pattern, tostring(err), 1, true)
  return err
end

describe("forage.redis", function()
  local srv, r
  setup(function() srv = redis_server.start {} end)
  teardown(function() srv:stop() end)
  before_each(function()
    r = srv:client()
    assert.equals("OK", r:call("FLUSHALL"))
  end)
  after_each(function() r:close() end)

  it("connects and answers PING; tostring names the address; fd is the socket's, close-on-exec", function()
    assert.equals("PONG", r:call("PING"))
    assert.equals(("forage.redis (127.0.0.1:%d)"):format(srv.port), tostring(r))
    local fd = r:fd()
    assert.equals("integer", math.type(fd))
    local fdinfo = assert(helpers.read(("/proc/%d/fdinfo/%d"):format(forage.getpid(), fd)))
    local flags = tonumber(fdinfo:match("flags:%s*(%d+)"), 8)
    assert.is_true(flags & tonumber("2000000", 8) ~= 0, "the socket is not close-on-exec")
    assert.matches("socket:", assert(io.popen("readlink /proc/" .. forage.getpid() .. "/fd/" .. fd)):read("l"))
  end)

  it("sends and reads back binary values: NULs, every byte, 1 MB", function()
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local binary = "a\0b\0\r\n" .. table.concat(bytes)
    assert.equals("OK", r:call("SET", "k\0ey", binary))
    assert.equals(binary, r:call("GET", "k\0ey"))
    assert.is_false(r:call("GET", "k"))            -- the key's NUL is part of it
    local big = ("0123456789abcdef"):rep(65536)     -- 1 MB
    assert.equals("OK", r:call("SET", "big", big))
    assert.equals(big, r:call("GET", "big"))
    assert.equals(#big, r:call("STRLEN", "big"))
  end)

  it("turns each reply type into its Lua value", function()
    assert.equals("OK", r:call("SET", "n", "41"))
    local n = r:call("INCR", "n")
    assert.equals(42, n)
    assert.equals("integer", math.type(n))
    assert.equals("PONG", r:call("PING"))           -- status
    assert.is_false(r:call("GET", "missing"))       -- nil bulk
    assert.is_false(r:call("BLPOP", "empty", "0.01"))   -- nil array (BLPOP's time out)
    assert.same({}, r:call("LRANGE", "missing", 0, -1))
    local nested = r:call("EVAL", "return {1, {2, 'x', {'deep'}}, false, 'end'}", 0)
    -- Lua's false is Redis's nil, which ends a Lua sequence; Redis keeps it in the array
    assert.same({ 1, { 2, "x", { "deep" } }, false, "end" }, nested)
    assert.same({ 1, { err = "ERR boom" } }, r:call("EVAL", "return {1, redis.error_reply('boom')}", 0))
    assert.equals(2, r:call("RPUSH", "list", "a", "b"))
    assert.same({ "a", "b" }, r:call("LRANGE", "list", 0, -1))
  end)

  it("returns an error reply as nil, message, 'reply', and the connection goes on", function()
    assert.equals("OK", r:call("SET", "s", "text"))
    local v, message, kind = r:call("INCR", "s")
    assert.is_nil(v)
    assert.equals("reply", kind)
    assert.equals("ERR value is not an integer or out of range", message)
    v, message, kind = r:call("NOSUCHCOMMAND", "x")
    assert.is_nil(v)
    assert.equals("reply", kind)
    assert.matches("^ERR unknown command", message)
    assert.equals("text", r:call("GET", "s"))
    assert.equals("PONG", r:call("PING"))
  end)

  it("sends numbers as text: integers as %lld, floats as %.17g", function()
    assert.equals("1.5", r:call("INCRBYFLOAT", "f", 1.5))
    assert.equals("3", r:call("INCRBYFLOAT", "f", 1.5))
    assert.equals("OK", r:call("SET", "i", math.maxinteger))
    assert.equals(tostring(math.maxinteger), r:call("GET", "i"))
    assert.equals("OK", r:call("SET", "neg", math.mininteger))
    assert.equals(math.mininteger, r:call("INCRBY", "neg", 0))
    assert.equals("OK", r:call("SET", "tenth", 0.1))
    assert.equals(0.1, tonumber(r:call("GET", "tenth")))
    assert.equals("OK", r:call("SET", "third", 1 / 3))
    assert.equals(1 / 3, tonumber(r:call("GET", "third")))   -- 17 digits: the same double back (%.14g loses it)
    assert.equals("OK", r:call("SET", "whole", 2.0))
    assert.equals("2", r:call("GET", "whole"))
  end)

  it("pipelines 1000 commands, an error reply in the middle as { err = message }", function()
    local commands = {}
    for i = 1, 1000 do
      commands[i] = i == 500 and { "HSET", "counter" } or { "INCR", "counter" }
    end
    local replies = assert(r:pipeline(commands))
    assert.equals(1000, #replies)
    assert.equals(1, replies[1])
    assert.equals(499, replies[499])
    assert.equals("table", type(replies[500]))
    assert.matches("wrong number of arguments", replies[500].err)
    assert.equals(500, replies[501])
    assert.equals(999, replies[1000])
    assert.equals("999", r:call("GET", "counter"))
    assert.same({}, r:pipeline({}))
    assert.same({ "OK", "v", false }, r:pipeline({ { "SET", "p", "v" }, { "GET", "p" }, { "GET", "nope" } }))
  end)

  it("runs a loaded script by its SHA1 (EVALSHA)", function()
    local sha = r:call("SCRIPT", "LOAD", "return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert.matches("^%x+$", sha)
    assert.equals(40, #sha)
    assert.equals(5, r:call("EVALSHA", sha, 1, "sk", 5))
    assert.equals(12, r:call("EVALSHA", sha, 1, "sk", 7))
    local v, message, kind = r:call("EVALSHA", ("0"):rep(40), 0)
    assert.is_nil(v)
    assert.equals("reply", kind)
    assert.matches("^NOSCRIPT", message)
  end)

  it("raises on bad arguments, before sending anything", function()
    -- called as methods (r:call), as the user does: Lua then counts from the first argument after self
    raises("bad argument #2 to 'call' (string or number expected, got table)", function() r:call("SET", {}, "v") end)
    raises("bad argument #1 to 'call' (string or number expected, got no value)", function() r:call() end)
    raises("bad argument #3 to 'call' (string or number expected, got boolean)", function()
      r:call("SET", "k", true)
    end)
    raises("bad argument #1 to 'pipeline' (command 2: string or number expected at 3, got table)", function()
      r:pipeline({ { "SET", "first", "1" }, { "SET", "b", {} } })
    end)
    raises("bad argument #1 to 'pipeline' (command 1: table expected, got string)", function()
      r:pipeline({ "PING" })
    end)
    raises("bad argument #1 to 'pipeline' (command 2: empty)", function() r:pipeline({ { "PING" }, {} }) end)
    raises("bad argument #1 to 'pipeline' (table expected, got no value)", function() r:pipeline() end)
    -- nothing of the refused pipeline went out: the next reply is this command's own
    assert.is_false(r:call("GET", "first"))
    assert.equals("PONG", r:call("PING"))
    raises("forage.redis.connect: unknown option 'hots'", redis.connect, { hots = "127.0.0.1" })
    raises("forage.redis.connect: option 'timeout' must be a number of seconds > 0, got 0", redis.connect,
      { timeout = 0 })
    raises("forage.redis.connect: option 'timeout' must be a number of seconds > 0, got -1", redis.connect,
      { timeout = -1 })
    raises("forage.redis.connect: option 'port' must be an integer from 1 to 65535, got 0", redis.connect,
      { port = 0 })
    raises("excludes 'host' and 'port'", redis.connect, { path = "/tmp/x.sock", port = 6379 })
  end)

  it("raises 'attempt to use a closed forage.redis' after close (idempotent)", function()
    local c = srv:client()
    c:close()
    c:close()
    assert.equals("forage.redis (closed)", tostring(c))
    raises("attempt to use a closed forage.redis", c.call, c, "PING")
    raises("attempt to use a closed forage.redis", c.pipeline, c, { { "PING" } })
    raises("attempt to use a closed forage.redis", c.fd, c)
    raises("attempt to use a closed forage.redis", c.reconnect, c)
    do
      local scoped <close> = srv:client()
      c = scoped
      assert.equals("PONG", scoped:call("PING"))
    end
    raises("attempt to use a closed forage.redis", c.call, c, "PING")
  end)

  it("refuses calls from a forked child, naming the owner; the child's close leaves the parent's socket", function()
    local parent_end, child_end = forage.pipe()
    local owner = forage.getpid()
    local p = helpers.reaped(finally, forage.process(function()
      local ok, err = pcall(r.call, r, "PING")
      child_end:send({ ok = ok, err = tostring(err) })
      r:close()              -- frees the child's copy only: writes nothing to the socket
      collectgarbage()
      collectgarbage()
    end):start())
    local got = assert(parent_end:recv(10))
    assert.equals(0, helpers.join_or_fail(p, 10))
    assert.is_false(got.ok)
    assert.matches(("forage.redis: this connection belongs to process %d (use one connection per process)")
      :format(owner), got.err, 1, true)
    assert.equals("PONG", r:call("PING"))
    assert.equals("OK", r:call("SET", "after", "fork"))
    assert.equals("fork", r:call("GET", "after"))
  end)

  it("frees every socket when connections are collected (__gc)", function()
    collectgarbage()
    collectgarbage()
    local before = open_fds()
    local clients_before = srv:info("clients").connected_clients
    -- in a function of its own, so that no register of this one still holds them
    local function open_and_drop()
      local list = {}
      for i = 1, 200 do list[i] = srv:client() end
      assert.equals("PONG", list[200]:call("PING"))
      assert.equals(before + 200, open_fds())
    end
    open_and_drop()
    collectgarbage()
    collectgarbage()
    assert.equals(before, open_fds())
    -- the server sees them go too (it notices a closed socket at its next event loop turn)
    local left
    for _ = 1, 500 do
      left = srv:info("clients").connected_clients
      if left == clients_before then break end
      forage.sleep(0.01)
    end
    assert.equals(clients_before, left)
  end)

  it("returns 'io' naming host:port for a port nothing listens on", function()
    local port = closed_port()
    local c, message, kind = redis.connect { host = "127.0.0.1", port = port, timeout = 2 }
    assert.is_nil(c)
    assert.equals("io", kind)
    assert.equals(("redis 127.0.0.1:%d: Connection refused"):format(port), message)
    c, message, kind = redis.connect { path = "/nonexistent/redis.sock" }
    assert.is_nil(c)
    assert.equals("io", kind)
    assert.equals("redis /nonexistent/redis.sock: No such file or directory", message)
  end)

  it("times out a reply that does not come (BLPOP longer than the timeout): 'timeout', then lost", function()
    local c = srv:client(0.3)
    local v, message, kind = c:call("BLPOP", "nothing", 5)
    assert.is_nil(v)
    assert.equals("timeout", kind)
    assert.equals(("redis 127.0.0.1:%d: no reply within 0.3 s"):format(srv.port), message)
    v, message, kind = c:call("PING")
    assert.is_nil(v)
    assert.equals("io", kind)
    assert.equals(("redis 127.0.0.1:%d: connection lost (no reply within 0.3 s)"):format(srv.port), message)
    assert.is_nil(c:fd())
    assert.is_true(c:reconnect())
    assert.equals("PONG", c:call("PING"))
    c:close()
  end)
end)

describe("forage.redis against a server that dies", function()
  it("returns 'io' when the server is killed, 'connection lost' after, and reconnects once it is back", function()
    local srv = redis_server.start { finally = finally }
    local r = srv:client()
    assert.equals("OK", r:call("SET", "k", "v"))
    srv:kill()
    local v, message, kind = r:call("GET", "k")
    assert.is_nil(v)
    assert.equals("io", kind)
    assert.matches(("^redis 127.0.0.1:%d: "):format(srv.port), message)
    local cause = message:match(": (.*)$")
    v, message, kind = r:call("PING")
    assert.is_nil(v)
    assert.equals("io", kind)
    assert.equals(("redis 127.0.0.1:%d: connection lost (%s)"):format(srv.port, cause), message)
    v, message, kind = r:pipeline({ { "PING" } })
    assert.is_nil(v)
    assert.equals("io", kind)
    assert.matches("connection lost", message, 1, true)
    assert.is_nil(r:fd())
    v, message, kind = r:reconnect()     -- nothing listens yet
    assert.is_nil(v)
    assert.equals("io", kind)
    assert.equals(("redis 127.0.0.1:%d: Connection refused"):format(srv.port), message)
    srv:restart()
    assert.is_true(r:reconnect())
    assert.equals("PONG", r:call("PING"))
    assert.is_false(r:call("GET", "k"))      -- no AOF, no save: the key died with the server
    r:close()
  end)

  it("keeps what was written with appendfsync always across kill -9 (AOF)", function()
    local srv = redis_server.start { appendonly = true, finally = finally }
    local r = srv:client()
    local commands = {}
    for i = 1, 100 do commands[i] = { "SET", "key" .. i, "value" .. i } end
    assert(r:pipeline(commands))
    assert.equals(100, r:call("RPUSH", "list", table.unpack((function()
      local t = {}
      for i = 1, 100 do t[i] = i end
      return t
    end)())))
    srv:kill()
    srv:restart()
    assert.is_true(r:reconnect())
    assert.equals(101, r:call("DBSIZE"))
    assert.equals("value1", r:call("GET", "key1"))
    assert.equals("value100", r:call("GET", "key100"))
    assert.equals(100, r:call("LLEN", "list"))
    r:close()
  end)

  it("a restarted server outlives the collection of its earlier run's guard (spec/redis_server.lua)", function()
    local srv = redis_server.start { finally = finally }
    srv:restart()
    srv:restart()
    collectgarbage()
    collectgarbage()          -- the guards of the two earlier runs are finalized now
    local r = srv:client()
    assert.equals("PONG", r:call("PING"))
    r:close()
  end)

  it("connects over a unix socket", function()
    local dir = helpers.make_dir("redis-sock")
    helpers.on_exit(finally, function() os.execute("rm -rf '" .. dir .. "'") end)
    local path = dir .. "/redis.sock"
    local srv = redis_server.start { args = { "--unixsocket", path, "--unixsocketperm", "700" }, finally = finally }
    local r = assert(redis.connect { path = path })
    assert.equals("forage.redis (" .. path .. ")", tostring(r))
    assert.equals("PONG", r:call("PING"))
    assert.equals(srv.pid, tonumber(r:call("INFO", "server"):match("process_id:(%d+)")))
    r:close()
  end)
end)

describe("forage.redis with authentication", function()
  it("AUTH with requirepass: the right password works, the wrong one's message has no password", function()
    local srv = redis_server.start { password = "s3cret-pw", finally = finally }
    assert.equals(("redis://:s3cret-pw@127.0.0.1:%d/0"):format(srv.port), srv.url)
    local r = assert(redis.connect { port = srv.port })
    local v, message, kind = r:call("GET", "k")
    assert.is_nil(v)
    assert.equals("reply", kind)
    assert.matches("^NOAUTH", message)
    v, message, kind = r:call("AUTH", "wrong-guess-pw")
    assert.is_nil(v)
    assert.equals("reply", kind)
    assert.matches("WRONGPASS", message, 1, true)
    assert.is_nil(message:find("wrong-guess-pw", 1, true))
    assert.is_nil(message:find("s3cret-pw", 1, true))
    assert.equals("OK", r:call("AUTH", "s3cret-pw"))
    assert.equals("OK", r:call("SET", "k", "v"))
    assert.equals("v", srv:client():call("GET", "k"))
    r:close()
  end)

  it("an ACL user: AUTH user password, the default user off", function()
    local srv = redis_server.start { acl_user = "crawler", password = "acl-pw", finally = finally }
    assert.equals(("redis://crawler:acl-pw@127.0.0.1:%d/0"):format(srv.port), srv.url)
    local r = assert(redis.connect { port = srv.port })
    local v, _, kind = r:call("AUTH", "acl-pw")          -- as the default user: off
    assert.is_nil(v)
    assert.equals("reply", kind)
    v, _, kind = r:call("AUTH", "crawler", "not-it")
    assert.is_nil(v)
    assert.equals("reply", kind)
    assert.equals("OK", r:call("AUTH", "crawler", "acl-pw"))
    assert.equals("crawler", r:call("ACL", "WHOAMI"))
    assert.equals("PONG", r:call("PING"))
    assert.equals("crawler", srv:client():call("ACL", "WHOAMI"))
    r:close()
  end)
end)
