-- forage: the public face. Friendly wrappers over the C core (forage.core); the README
-- is the user's reference for everything exported here.
local core = require "forage.core"
local pool = require "forage.pool"

local forage = {
  version = "scm-1",
  wire_version = core.wire_version,
}

-- forage.process(fn, ...) -> a Process, not yet started: p:start(), p:join([timeout]),
-- p.pid, p.exitcode, p:alive(), p:terminate(), p:kill(). The C function itself, not a
-- wrapper: its argument errors then name the caller's line and 'process', as Lua's own do.
forage.process = core.process

-- forage.pipe([duplex = true]) -> two Connections: send(v), recv([timeout]), poll([timeout]), close().
forage.pipe = core.pipe
-- forage.wait(connections [, timeout]) -> those whose recv would not block (Python's
-- multiprocessing.connection.wait).
forage.wait = core.wait

-- forage.pool(n) or forage.pool{ workers, init, init_args, max_tasks, task_retries, resources, resource }.
forage.pool = pool.new
forage.TaskError = pool.TaskError
forage.worker = require "forage.worker"

-- forage.encode(v [, { code = true, root = "name" }]) raises on a value that cannot travel;
-- forage.decode(s [, { code = true }]) returns nil, message, "malformed" on bad bytes.
forage.encode = core.encode
forage.decode = core.decode

-- Shared objects: created before a pool or process, inherited by it.
forage.queue = core.queue
forage.lock, forage.rlock = core.lock, core.rlock
forage.semaphore, forage.bounded_semaphore = core.semaphore, core.bounded_semaphore
forage.event, forage.condition, forage.barrier = core.event, core.condition, core.barrier
forage.value, forage.array = core.value, core.array
forage.set = core.set
forage.dict = core.dict

-- The crawl layer's building blocks (HTML on libxml2, URLs and HTTP on libcurl) live in
-- forage.web, loaded on first use: a program of pools and shared objects never loads
-- libcurl or libxml2, and its forks stay small.
local web_names = { http = true, html = true, url = true }
setmetatable(forage, {
  __index = function(t, name)
    if not web_names[name] then return nil end
    local web = require "forage.web"
    for k in pairs(web_names) do rawset(t, k, web[k]) end
    return web[name]
  end,
})

-- forage.crawl(spider [, opts]) -> stats: the crawl layer, loaded on first use.
function forage.crawl(spider, opts)
  return require("forage.crawl").run(spider, opts)
end

-- forage.manager([opts]): objects served by a process (Python's Manager, BaseManager);
-- forage.manager.connect{ address, authkey } from elsewhere. Pure Lua over forage.core.
forage.manager = require "forage.manager"

forage.cpu_count = core.cpu_count
forage.getpid = core.getpid
forage.getppid = core.getppid
forage.sleep = core.sleep
forage.now = core.now

return forage
