-- The crawl's parent: the frontier and the seen set, the workers, retries, the items'
-- pipelines and outputs, the stats, and the exact end.
--
-- The crawl ends by itself when nothing is queued, nothing is in flight (sent to a worker,
-- or waiting for a retry's backoff) and the start URLs are all read: every callback has
-- returned by then (its results arrive in one message with the request's end) and every
-- pipeline has run (they run here, as each message is handled). No polling of private
-- state, no sleep-and-hope.
local forage = require "forage"
local core = require "forage.core"
local spider_mod = require "forage.crawl.spider"
local worker_mod = require "forage.crawl.worker"
local frontier_mod = require "forage.crawl.frontier"
local output = require "forage.crawl.output"
local progress_mod = require "forage.crawl.progress"
local log_mod = require "forage.crawl.log"
local cache_mod = require "forage.crawl.cache"
local sink_mod = require "forage.crawl.sink"

local M = {}

-- Exit codes (also the CLI's).
M.DONE, M.FATAL, M.BAD_INPUT, M.NO_PROXY = 0, 1, 2, 3

local START_LOW_WATER = 10000      -- start requests read ahead into the frontier
local WORKER_DEATHS = 3            -- a request whose callback killed its worker this often fails
local BYSTANDER_DEATHS = 10        -- a request in a worker that died this often, not in its callback
local STOP_WAIT = 5                -- seconds the workers have to finish after "stop"
local COMMIT_EVERY = 0.5           -- seconds between the state's commits (a batch of results each;
                                   -- each syncs the output file first: a few ms of the parent's)
local GRACE = 10                   -- seconds in-flight requests have to finish after Ctrl-C or SIGTERM

-- Exit codes of a crawl stopped by a signal (the shell's 128 + signal number).
M.INTERRUPTED, M.TERMINATED = 130, 143

-- An error that ends the crawl with exit code 2 (a bad spider found while running).
local BadInput = {}
BadInput.__index = BadInput
BadInput.__tostring = function(e) return e.message end
M.BadInput = BadInput

-- A copy of t with plain tables only (the stats' JSON objects carry a metatable), for the state.
local function plain(t)
  if type(t) ~= "table" then return t end
  local copy = {}
  for k, v in pairs(t) do copy[k] = plain(v) end
  return copy
end

-- What names a crawl's start for its state: a resumed crawl skips the start requests read
-- before, which is right only for the same start (a file may have grown: it is named by
-- its path). Returns the key and words for a message.
local function start_key(start)
  if start.file then return "file:" .. start.file, "the file " .. start.file end
  if start.fn then return "function", "a function" end
  local urls = {}
  for i, u in ipairs(start.list) do urls[i] = type(u) == "table" and u.url or u end
  return "list:" .. core.digest(table.concat(urls, "\n")), ("a list of %d URLs"):format(#urls)
end

-- The counters of an earlier run (a state's), added to this run's stats.
local function merge_saved_stats(stats, saved)
  if type(saved) ~= "table" then return end
  for k, v in pairs(saved) do
    if math.type(v) == "integer" and math.type(stats[k]) == "integer" then
      stats[k] = stats[k] + v
    end
  end
  for _, key in ipairs { "by_status", "errors" } do
    for k, v in pairs(saved[key] or {}) do stats[key][k] = (stats[key][k] or 0) + v end
  end
  for _, before in ipairs(saved.proxies or {}) do
    for _, p in ipairs(stats.proxies) do
      if p.url == before.url then
        for k, v in pairs(before) do
          if math.type(v) == "integer" and math.type(p[k]) == "integer" then p[k] = p[k] + v end
        end
      end
    end
  end
end

-- The crawl. Returns the stats table (stats.exit_code says how it ended).
function M.run(spider, overrides)
  local s = spider_mod.check(spider, overrides)
  local run = s.run
  local now = forage.now
  local url_lib = forage.url
  local progress = progress_mod.new { quiet = run.quiet or run.log_level == "error" }
  local log = log_mod.new { level = run.log_level or "info", quiet = run.quiet,
    before = function() progress:clear() end }
  local started_at, cpu0 = now(), os.clock()

  local stats = {
    name = s.name, pages = 0, items = 0, bytes = 0, requests = 0, by_status = output.object(),
    errors = output.object(),
    retries = 0, proxy_switches = 0, duplicates = 0, skipped_links = 0, offsite = 0, depth_dropped = 0,
    robots_forbidden = 0, cache_hits = 0, cache_stores = 0, failed = 0, items_dropped = 0, worker_deaths = 0,
    proxies = {}, finished = "done", exit_code = M.DONE,
  }
  for i, p in ipairs(s.proxies or {}) do
    stats.proxies[i] = { url = spider_mod.mask(p), requests = 0, successes = 0, failures = 0, bans = 0, cooldowns = 0 }
  end

  local function bad_input(message) error(setmetatable({ message = message }, BadInput), 0) end

  -- the crawl's state (--state DIR): what an earlier run left, or a new one
  local state, resume = nil, {}
  if s.state then
    if run.output == "-" then
      bad_input("forage.crawl: a crawl with a state needs an output file (-o FILE): items written to stdout "
        .. "cannot be taken back when a stopped crawl resumes")
    end
    local err
    state, err = require("forage.crawl.state").open(s.state, { name = s.name, hash = spider_mod.hash(spider),
      fresh = run.fresh or false })
    if not state then bad_input("forage.crawl: " .. err) end
    local key, what = start_key(s.start)
    local saved_start = state.resumed and state:saved("start")
    if saved_start and saved_start.key ~= key and state:saved("finished") ~= "done" then
      state:close()
      bad_input(("forage.crawl: this crawl started from %s; it cannot resume from %s%s (it would skip the start "
        .. "requests it read before): give the same start, or --fresh to start over"):format(saved_start.what,
        saved_start.what == what and "a different one: " or "", what))
    end
    state.start = { key = key, what = what }
    if state.resumed then
      resume = state:saved("outputs") or {}
      resume.resumed = true
      if state:saved("finished") == "done" then
        local saved = state:saved("stats") or {}
        state:close()
        stats.finished, stats.exit_code = "already_done", M.DONE
        stats.message = ("this crawl finished before (%d pages, %d items; state %s): --fresh starts it over"):format(
          saved.pages or 0, saved.items or 0, s.state)
        stats.pages, stats.items, stats.failed = saved.pages or 0, saved.items or 0, saved.failed or 0
        stats.elapsed, stats.pages_per_s, stats.cpu_seconds = 0, 0, 0
        return stats
      end
      merge_saved_stats(stats, state:saved("stats"))
    end
  end
  -- one crawl on several hosts (--redis URL): this host joins it, or learns it is over
  local shared
  if s.redis then
    if s.state then
      bad_input("forage.crawl: --state and --redis: choose one (with Redis the crawl's state is in Redis)")
    end
    if not run.output or run.output == "-" then
      bad_input("forage.crawl: a crawl on Redis needs an output file per host (-o FILE): the part of it that is "
        .. "committed is what this host contributes (forage merge joins them)")
    end
    local redis_mod = require "forage.crawl.redis"
    local err, why
    shared, err, why = redis_mod.open(s.redis, { prefix = s.redis_prefix or s.name, name = s.name,
      hash = spider_mod.hash(spider), proxies = s.proxies and #s.proxies or 0, lease = s.redis_lease,
      request_timeout = s.timeout + 1,
      outputs = { items = run.output, failed = run.failed or output.failed_path(run.output) } })
    if not shared then
      if why == "finished" then
        stats.finished, stats.exit_code, stats.message = "already_done", M.DONE, err
        stats.elapsed, stats.pages_per_s, stats.cpu_seconds = 0, 0, 0
        return stats
      end
      bad_input(err)
    end
    resume = shared.resume
    resume.resumed = true
    stats.redis = redis_mod.mask(s.redis)
  end
  local pages_before = stats.pages
  stats.resumed = state and state.resumed or nil

  -- items and failures: the items' file is opened before any request (a path that cannot
  -- be written stops the crawl there)
  local sink, sink_err = sink_mod.open(s, stats, log, resume)
  if not sink then
    if state then state:close() end
    if shared then shared:leave("left") shared:close() end
    bad_input(sink_err)
  end
  local function fail_request(req, reason) sink:fail_request(req, reason) end

  -- the shared lease table: one truth for the parent and every worker
  local leases
  if s.proxies then
    leases = core.leases { count = #s.proxies, slots = s.concurrency, per_resource = s.proxy.slots,
      max_failures = s.proxy.max_failures, cooldown = s.proxy.cooldown, max_cooldown = s.proxy.max_cooldown,
      retire_after = s.proxy.retire_after, name = "forage.crawl proxy" }
  end
  if leases and state and state.resumed then
    -- a proxy that was cooling when the crawl stopped cools for what was left of it; one
    -- retired then gets another chance (it may have been revived, or be new)
    local saved, since = state:saved("stats") or {}, os.time() - (tonumber(state:saved("updated")) or os.time())
    for _, before in ipairs(saved.proxies or {}) do
      for i, p in ipairs(stats.proxies) do
        if p.url == before.url and before.state == "cooling" and (before.cooldown_left or 0) > since then
          leases:restore(i, before.cooldown_left - since, before.last_error)
        end
      end
    end
  end
  if leases and shared then
    -- on Redis, this host uses the proxies Redis gives it (its share), none before
    for i = 1, #s.proxies do leases:disable(i) end
  end
  -- without proxies, `delay` paces the one direct route (the lease table's pacing, one
  -- resource that every slot may hold)
  local direct_pacer
  if not s.proxies and s.delay > 0 then
    direct_pacer = core.leases { count = 1, slots = s.concurrency, per_resource = s.concurrency,
      name = "forage.crawl delay" }
  end
  local cache
  if s.cache then
    local err
    cache, err = cache_mod.open(s.cache, { refresh = s.cache_refresh })
    if not cache then error(setmetatable({ message = "forage.crawl: cache: " .. tostring(err) }, BadInput), 0) end
  end
  -- what each worker's callback is working on (a request id, 0 between callbacks), so that
  -- a worker's death is charged to the request that killed it, not to its bystanders
  local running = core.array("int64", s.workers)
  -- on Redis: until when (forage.now) this host's proxies are surely its own: its lease as
  -- last renewed, less a margin; workers start no request through a proxy after it
  local usable_until = shared and leases and core.array("double", 1)
  if usable_until then usable_until[1] = now() + (s.redis_lease or 30) * 0.9 end

  local fr
  if state then
    local err
    fr, err = state:frontier { per_host = s.per_host }
    if not fr then
      sink:close()
      state:close()
      bad_input("forage.crawl: " .. err)
    end
    if state.resumed then
      log:info("resuming from %s: %d requests queued again, %d seen, %d pages and %d items before", s.state,
        state.loaded.queued, state.loaded.seen, stats.pages, stats.items)
    end
  elseif shared then
    fr = shared:frontier { per_host = s.per_host, batch = math.max(16, s.concurrency), now = now }
  else
    fr = frontier_mod.memory { per_host = s.per_host }
  end
  local inflight, ninflight = {}, 0     -- id -> { req, worker, seq } (worker nil: waiting for a backoff)
  local dispatched = 0                  -- requests sent to workers (seq: the number of each)
  local delayed = {}                    -- { due, req }, for retries after a backoff

  -- Queues a request (a start request or a follow): dedupe, then the frontier.
  local function enqueue(req)
    req.callback = req.callback or "parse"
    req.depth = req.depth or 0
    req.priority = req.priority or 0
    req.attempts, req.switches, req.reasons = req.attempts or 0, req.switches or 0, req.reasons or {}
    local host = req.url:match("^%a[%w+.-]*://([^/?#]*)")
    req.host = host and host:gsub("^.*@", ""):lower() or ""
    local fp = url_lib.fingerprint(req.url)
    if not fp then
      stats.skipped_links = stats.skipped_links + 1
      return false
    end
    local method = req.method and req.method:upper() or "GET"
    if method ~= "GET" or req.body then fp = fp .. "\0" .. method .. "\0" .. (req.body or "") end
    req.fp = fp
    local pushed, new = pcall(fr.push, fr, req)
    if not pushed then
      -- data that cannot be queued (a function in meta): this request fails, the crawl goes on
      fail_request(req, "cannot queue the request: " .. tostring(new))
      return false
    end
    if not new then
      stats.duplicates = stats.duplicates + 1
      return false
    end
    return true
  end

  -- start requests, read ahead as the frontier empties
  local start_it = spider_mod.start_iterator(s)
  local start_done, start_read = false, 0
  -- a running digest of the start URLs read, so that a resume can tell that the start it
  -- skips is the one read before (a start file edited in the middle, a function that
  -- yields something else)
  local start_digest = ""
  local function read_start(req)
    if state then
      start_digest = core.digest(start_digest .. (type(req) == "table" and tostring(req.url) or tostring(req)))
    end
  end
  if state and state.resumed then
    -- the start requests read before are in the state (queued, or done): skip them
    start_read = tonumber(state:saved("start_read")) or 0
    start_done = state:saved("start_done") == true
    if not start_done then
      for _ = 1, start_read do
        local ok, req = pcall(start_it)
        if not ok and tostring(req):find("interrupted!$") then error(req, 0) end   -- Ctrl-C
        if not ok then bad_input(tostring(req)) end
        if not req then start_done = true break end
        read_start(req)
      end
      if start_digest ~= (state:saved("start_digest") or "") then
        state:close()
        bad_input(("forage.crawl: the first %d start requests are not the ones this crawl read before (%s "
          .. "changed): resuming would skip the wrong ones; give the start it had, or --fresh to start over"):format(
          start_read, state.start.what))
      end
    end
  end
  local function feed_start()
    if start_done then return end
    for _ = 1, START_LOW_WATER - fr:counts().queued do
      local ok, req = pcall(start_it)
      if not ok then error(setmetatable({ message = tostring(req) }, BadInput), 0) end
      if not req then
        start_done = true
        break
      end
      start_read = start_read + 1
      read_start(req)
      local copy = {}
      for k, v in pairs(req) do copy[k] = v end
      if copy.callback and not s.callbacks[copy.callback] then
        error(setmetatable({ message = string.format(
          "forage.crawl: a start request names callback '%s', which the spider does not have", copy.callback) },
          BadInput), 0)
      end
      -- on Redis every host reads the whole start: a dont_filter start request is queued
      -- once for the crawl by its place in the start, which the seen set keeps
      if shared and copy.dont_filter then copy._once = "\0start\0" .. start_read end
      enqueue(copy)
    end
  end
  -- workers
  local workers = {}
  local per, extra = s.concurrency // s.workers, s.concurrency % s.workers
  local first = 1
  for i = 1, s.workers do
    local count = per + (i <= extra and 1 or 0)
    workers[i] = { index = i, first = first, count = count, inflight = {} }
    first = first + count
  end

  local function spawn(w)
    local parent_end, child_end = forage.pipe()
    local proc = forage.process(function()
      parent_end:close()
      for _, other in ipairs(workers) do
        if other.conn then other.conn:close() end
      end
      worker_mod.run(child_end, s, { index = w.index, first = w.first, count = w.count, leases = leases,
        cache = cache, running = running, direct_pacer = direct_pacer, usable_until = usable_until })
    end)
    proc:start()
    child_end:close()
    w.conn, w.proc = parent_end, proc
    w.free, w.got, w.sent, w.cpu = 0, 0, 0, 0
  end

  local cpu_of_dead = 0
  local stopping, stop_reason
  local function stop(finished, code, message)
    if not stopping then
      stopping, stop_reason = true, message
      stats.finished, stats.exit_code = finished, code
    end
  end

  -- A failure of the state or of an output: the crawl ends with exit 1 and this message,
  -- also when it was already stopping (a commit that fails during a Ctrl-C's drain must not
  -- be reported as a saved state).
  local function fail_hard(message)
    if stats.exit_code ~= M.FATAL then
      stats.finished, stats.exit_code, stop_reason = "fatal", M.FATAL, message
    end
    stopping = true
  end

  local function backoff(attempt)
    local base = math.min(0.5 * 2 ^ (attempt - 1), 30)
    return base * (0.5 + math.random())
  end

  -- Counts an attempt of req; retries it after a backoff (or `at_least` seconds, when longer)
  -- while its budget lasts, else it fails with every reason it met. The request stays in
  -- flight while it waits, so the crawl does not end under it.
  local function retry_later(req, at_least)
    req.attempts = req.attempts + 1
    if req.attempts > s.retries then
      fr:ack(req)
      fail_request(req, ("gave up after %d retries"):format(s.retries))
      return
    end
    stats.retries = stats.retries + 1
    delayed[#delayed + 1] = { due = now() + math.max(backoff(req.attempts), at_least or 0), req = req }
    inflight[req.id], ninflight = { req = req }, ninflight + 1
  end

  local function add_count(t, key)
    t[key] = (t[key] or 0) + 1
  end

  -- One result of a worker: the request is done, retried, or failed.
  local function handle_result(res)
    local entry = inflight[res.id]
    if not entry then return end
    local req, w = entry.req, entry.worker
    inflight[res.id] = nil
    ninflight = ninflight - 1
    if w then w.inflight[res.id] = nil end
    local pstats = res.proxy and stats.proxies[res.proxy]
    if pstats and res.cooled then pstats.cooldowns = pstats.cooldowns + 1 end
    local outcome = res.outcome
    if outcome ~= "returned" and outcome ~= "robots" and not res.cached then
      stats.requests = stats.requests + 1
      if pstats then pstats.requests = pstats.requests + 1 end
    end
    if res.status then add_count(stats.by_status, tostring(res.status)) end
    if outcome == "ok" then
      stats.pages = stats.pages + 1
      stats.bytes = stats.bytes + (res.bytes or 0)
      if pstats then pstats.successes = pstats.successes + 1 end
      fr:ack(req)
      sink:items(res, req)
      for _, f in ipairs(res.follows or {}) do
        if s.callbacks[f.callback] then enqueue(f) end
      end
    elseif outcome == "proxy" or outcome == "ban" then
      if pstats then
        if outcome == "ban" then pstats.bans = pstats.bans + 1 else pstats.failures = pstats.failures + 1 end
      end
      add_count(stats.errors, outcome == "ban" and "ban" or res.kind or "proxy")
      req.reasons[#req.reasons + 1] = res.reason
      if s.proxies then
        req.switches = req.switches + 1
        stats.proxy_switches = stats.proxy_switches + 1
        if req.switches > s.proxy.switches then
          fr:ack(req)
          fail_request(req, ("gave up after %d proxy switches"):format(req.switches - 1))
        else
          fr:retry(req)
        end
      else
        -- a ban without proxies: wait (Retry-After or a backoff) and retry, within retries
        retry_later(req, res.retry_after)
      end
    elseif outcome == "retry" then
      add_count(stats.errors, res.kind or ("http_" .. tostring(res.status)))
      req.reasons[#req.reasons + 1] = res.reason
      retry_later(req)
    elseif outcome == "fail" then
      if res.kind then add_count(stats.errors, res.kind) end
      if pstats and res.status then pstats.successes = pstats.successes + 1 end
      fr:ack(req)
      fail_request(req, res.reason)
    elseif outcome == "robots" then
      stats.robots_forbidden = stats.robots_forbidden + 1
      fr:ack(req)
    elseif outcome == "returned" then
      fr:retry(req)
    end
  end

  -- A worker died: its requests go back to the queue, its slots' proxies are freed
  -- unharmed, and a new worker takes its slots.
  local function worker_died(w)
    stats.worker_deaths = stats.worker_deaths + 1
    local culprit = running[w.index]
    running[w.index] = 0
    w.conn:close()
    w.proc:join(5)
    if w.proc:alive() then w.proc:kill() w.proc:join() end
    cpu_of_dead = cpu_of_dead + (w.cpu or 0)
    local held = 0
    for id in pairs(w.inflight) do
      held = held + 1
      local entry = inflight[id]
      inflight[id] = nil
      ninflight = ninflight - 1
      local req = entry.req
      if id == culprit then
        req.deaths = (req.deaths or 0) + 1
        req.reasons[#req.reasons + 1] = "its worker died in its callback"
      else
        req.bystander = (req.bystander or 0) + 1
      end
      if (req.deaths or 0) >= WORKER_DEATHS or req.bystander and req.bystander >= BYSTANDER_DEATHS then
        fr:ack(req)
        fail_request(req, ("gave up: its worker died %d times while it was there"):format(
          (req.deaths or 0) + (req.bystander or 0)))
      else
        fr:retry(req)
      end
    end
    w.inflight = {}
    log:warn("worker %d (pid %d) died (exit %s) with %d requests; the one in its callback, if any, is charged",
      w.index, w.proc.pid, tostring(w.proc.exitcode), held)
    if leases then
      for slot = w.first, w.first + w.count - 1 do leases:release(slot) end
    end
    if not stopping then spawn(w) else w.conn, w.proc = nil, nil end
  end

  -- The state's commit: the outputs synced, then in one transaction the pushes and acks
  -- since the last commit, the counters, the files' lengths and how far the start was read.
  -- A commit that fails (a full disk) stops the crawl; the state stays as the last commit
  -- left it.
  local last_commit = now()
  -- on Redis: a commit every COMMIT_EVERY while there is something to send, else a
  -- heartbeat every IDLE_COMMIT_EVERY (it renews the lease and learns of new work and of
  -- the end); a slow crawl thus sends a few commands a second, not ten
  local shared_commit_every, shared_idle_every
  if shared then
    local redis_mod = require "forage.crawl.redis"
    shared_commit_every, shared_idle_every = redis_mod.COMMIT_EVERY, redis_mod.IDLE_COMMIT_EVERY
  end
  local function shared_commit_due(t)
    local every = shared:has_news(stats) and shared_commit_every or shared_idle_every
    return last_commit + every - t
  end
  local proxy_summary   -- below
  local redis_commit   -- below
  local function commit(finished)
    if shared then return redis_commit() end
    if not state then return true end
    last_commit = now()
    local outputs, files = sink:files()
    local counts = fr:counts()
    if leases then proxy_summary() end
    local entries = { stats = plain(stats), outputs = outputs, start = state.start, start_read = start_read,
      start_done = start_done, start_digest = start_digest,
      progress = { queued = counts.queued, inflight = ninflight, seen = counts.seen, pid = forage.getpid(),
        pages_per_s = stats.pages_per_s or 0 } }
    entries.stats.pages_per_s, entries.stats.finished, entries.stats.exit_code = nil, nil, nil
    if finished then entries.finished = finished end
    local ok, err = state:commit(entries, files)
    if not ok then
      fail_hard("forage.crawl: " .. err)
      return false
    end
    return true
  end

  -- The host's commit to Redis: its outputs synced, then its follows, acks, counters and
  -- proxies' health in one script; the proxies Redis gives or takes are applied here.
  -- Redis unreachable: the work goes on, the commit waits (nothing is lost, and nothing is
  -- counted twice: it is sent again as it was).
  local redis_down, reported, last_ok = false, {}, now()
  function redis_commit()
    last_commit = now()
    local records, files = sink:files()
    local proxies
    if leases then
      proxies = {}
      for i, r in ipairs(leases:snapshot()) do
        local st = r.state == "cooling" and "cooling" or r.state == "retired" and "retired" or r.state ~= "off" and "ok"
        local key = st and (st == "ok" and "ok" or st .. (r.reason or ""))
        if st and reported[i] ~= key then
          proxies[i] = { state = st, cooldown = r.cooldown, reason = r.reason }
          reported[i] = key
        end
      end
    end
    local idle = ninflight == 0 and start_done and fr:counts().local_queued == 0
    local oldest = math.huge
    if next(shared.draining) then
      for _, entry in pairs(inflight) do
        if entry.worker and entry.seq < oldest then oldest = entry.seq end
      end
    end
    local sent_at = now()
    local ok, got, give = shared:commit(sent_at, { files = files, records = records, stats = stats,
      proxies = proxies, idle = idle, oldest_running = oldest })
    local lease = s.redis_lease or 30
    if not ok then
      local message, kind = got, give
      if (kind == "io" or kind == "timeout") and sent_at - last_ok > lease then
        -- this long without Redis, the other hosts (when it is back) take this host's work:
        -- it stops rather than wait for ever
        fail_hard(("forage.crawl: Redis at %s unreachable for %d s, longer than redis_lease (%g s): this host "
          .. "stops; what it held returns to the queue when Redis is back (%s)"):format(shared.shown,
          math.floor(sent_at - last_ok), lease, tostring(message)))
        return false
      elseif kind == "io" or kind == "timeout" then
        if not redis_down then
          redis_down = true
          log:warn("redis: %s; retrying (the requests this host holds stay its own; nothing is lost)", message)
        end
        for i in pairs(proxies or {}) do reported[i] = nil end
        return true
      elseif kind == "lost" then
        fail_hard("forage.crawl: this host lost its place in the crawl (no commit reached Redis for "
          .. (s.redis_lease or 30) .. " s, or Redis lost its last writes): its requests went back to the queue "
          .. "for the other hosts, and what it wrote since its last commit does not count; run it again to rejoin")
      else
        fail_hard("forage.crawl: " .. tostring(message))
      end
      return false
    end
    last_ok = sent_at
    if usable_until then usable_until[1] = sent_at + lease - math.max(0.5, lease * 0.1) end
    if redis_down then
      redis_down = false
      log:info("redis: reachable again")
    end
    stats.duplicates = stats.duplicates + (shared.duplicates or 0)
    shared.duplicates = 0
    if leases and not next(shared.proxies_mine) and #got == 0 and shared.usable_proxies > 0
      and (ninflight > 0 or fr:counts().local_queued > 0) then
      -- this host holds requests but no proxy (its own retired, every live one held by the
      -- other hosts): it leaves, and what it holds goes back to them
      stop("no_proxy", M.NO_PROXY, "this host holds no proxy (the crawl's other hosts hold every live one); "
        .. "what it held went back to them")
    end
    if leases then
      for _, g in ipairs(got) do
        leases:enable(g.index, g.cooldown, g.reason)
        reported[g.index] = nil
      end
      for _, i in ipairs(give) do
        if not shared.draining[i] then
          leases:disable(i)
          -- handed on once the requests sent before now are back
          shared:drain_proxy(i, dispatched)
        end
      end
    end
    return true
  end

  local function handle_message(w, msg)
    w.got, w.free, w.cpu = msg.got, msg.free, msg.cpu or w.cpu
    for k, v in pairs(msg.stats or {}) do stats[k] = (stats[k] or 0) + v end
    for _, res in ipairs(msg.results or {}) do handle_result(res) end
    if sink.io_error and state and not state.failed then
      -- an output refused bytes: nothing more is committed, so that the pages whose items
      -- or failures it lost are fetched again when the crawl resumes
      state:abandon("forage.crawl: " .. sink.io_error, "io")
      fail_hard("forage.crawl: " .. sink.io_error .. " (the state keeps its last commit)")
    end
    if msg.fatal then stop("fatal", M.BAD_INPUT, msg.fatal) end
  end

  -- Sends each worker as many requests as it has room for. Sends never wait (send_nowait):
  -- the parent goes on reading its workers while a large batch goes out, so that parent and
  -- worker can never both wait for the other to read; a worker with bytes still queued gets
  -- no more until they are out.
  local function dispatch()
    if stopping then return end
    if shared and leases and not next(shared.proxies_mine) then return end
    if s.max_items > 0 and stats.items >= s.max_items then return end
    for _, w in ipairs(workers) do
      if w.conn and (w.queued or 0) == 0 then
        local room = w.free - (w.sent - w.got)
        if s.max_pages > 0 then room = math.min(room, s.max_pages - stats.pages - ninflight) end
        if room > 0 then
          local reqs = fr:pop(room)
          if #reqs > 0 then
            for _, req in ipairs(reqs) do
              dispatched = dispatched + 1
              inflight[req.id] = { req = req, worker = w, seq = dispatched }
              ninflight = ninflight + 1
              w.inflight[req.id] = true
            end
            w.sent = w.sent + #reqs
            local queued = w.conn:send_nowait { reqs = reqs }
            if not queued then worker_died(w) else w.queued = queued end
          end
        end
      end
    end
  end

  -- Writes what is queued for each worker; true when something is still queued.
  local function flush_workers()
    local any = false
    for _, w in ipairs(workers) do
      if w.conn and (w.queued or 0) > 0 then
        local queued = w.conn:flush()
        if not queued then worker_died(w) else w.queued = queued end
        any = any or (w.queued or 0) > 0
      end
    end
    return any
  end

  function proxy_summary()
    local snapshot = leases:snapshot()
    local live, cooling, retired = 0, 0, 0
    for i, r in ipairs(snapshot) do
      local p = stats.proxies[i]
      p.state, p.last_error, p.cooldown_left = r.state, r.reason, r.cooldown > 0 and r.cooldown or nil
      if r.state == "retired" then retired = retired + 1
      elseif r.state == "cooling" then cooling = cooling + 1
      elseif r.state ~= "off" then live = live + 1 end   -- off: another host of the crawl holds it
    end
    return live, cooling, retired
  end

  local function snapshot_progress()
    local counts = fr:counts()
    local elapsed = now() - started_at
    local snap = { done = stats.pages, queued = counts.queued, inflight = ninflight, items = stats.items,
      failed = stats.failed, pages_per_s = elapsed > 0 and stats.pages / elapsed or 0 }
    if leases then
      local live, cooling, retired = proxy_summary()
      snap.proxies = { live = live, cooling = cooling, retired = retired }
    end
    return snap
  end
  local last_progress = 0

  -- Reads everything a worker has sent, without waiting for more.
  local function read_worker(w)
    local conn = w.conn
    repeat
      local msg, why = conn:recv(0)
      if msg then
        handle_message(w, msg)
      elseif why == "closed" then
        worker_died(w)
      end
    until not msg or w.conn ~= conn or not conn:poll()
  end

  local function worker_conns()
    local conns = {}
    for _, w in ipairs(workers) do if w.conn then conns[#conns + 1] = w.conn end end
    return conns
  end

  local function by_conn(conn)
    for _, w in ipairs(workers) do if w.conn == conn then return w end end
  end

  -- Ctrl-C and SIGTERM: no new work; the requests in flight have `grace` seconds to end
  -- (a second signal ends them at once); what is not done stays queued in the state
  local draining, hard_stop, grace_deadline, signal_name
  local function check_signals()
    local nint, nterm, last = core.caught_signals()
    if nint + nterm == 0 then return end
    if not draining then
      draining = true
      signal_name = last
      if last == "TERM" then stop("terminated", M.TERMINATED, "terminated (SIGTERM)")
      else stop("interrupted", M.INTERRUPTED, "interrupted") end
      grace_deadline = now() + (run.grace or GRACE)
      log:warn("%s: finishing the %d requests in flight (at most %g s; again to stop at once)",
        last == "TERM" and "SIGTERM" or "Ctrl-C", ninflight - #delayed, run.grace or GRACE)
      for _, w in ipairs(workers) do
        if w.conn then
          local queued = w.conn:send_nowait { drain = true }
          if not queued then worker_died(w) else w.queued = queued end
        end
      end
    end
    if nint + nterm >= 2 then hard_stop = true end
  end

  -- the loop
  local interrupted
  core.catch_signals()
  local ok, err = xpcall(function()
    feed_start()
    if shared then commit() end   -- the start's requests into Redis, and this host's proxies
    for _, w in ipairs(workers) do spawn(w) end
    while true do
      check_signals()
      local t = now()
      -- retries whose backoff is over go back to the queue
      if #delayed > 0 then
        local keep = {}
        for _, d in ipairs(delayed) do
          if d.due <= t then
            inflight[d.req.id] = nil
            ninflight = ninflight - 1
            fr:retry(d.req)
          else
            keep[#keep + 1] = d
          end
        end
        delayed = keep
      end
      if not stopping then feed_start() end
      dispatch()
      if draining then
        if hard_stop or ninflight - #delayed == 0 or t >= grace_deadline then break end
      elseif stopping then
        break
      end
      local queued = fr:counts().queued
      local limit = s.max_pages > 0 and stats.pages >= s.max_pages and "max_pages"
        or s.max_items > 0 and stats.items >= s.max_items and "max_items"
      if ninflight == 0 and (limit or start_done and queued == 0) then
        if limit and (queued > 0 or not start_done) then stats.finished = limit end
        break
      end
      if shared and leases and shared.usable_proxies == 0 then
        stop("no_proxy", M.NO_PROXY, "no live proxy left (on any host of the crawl)")
        break
      end
      if leases and not shared and leases:none_left() then
        stop("no_proxy", M.NO_PROXY, "no live proxy left")
        break
      end
      if t - last_progress >= 0.2 then
        last_progress = t
        local snap = snapshot_progress()
        progress:update(snap)
        if run.on_progress then run.on_progress(snap) end
      end
      local timeout = 0.25
      if shared then timeout = math.max(0.001, math.min(timeout, shared_commit_due(t))) end
      for _, d in ipairs(delayed) do timeout = math.min(timeout, math.max(0, d.due - t)) end
      if flush_workers() then timeout = math.min(timeout, 0.002) end
      for _, conn in ipairs(forage.wait(worker_conns(), timeout)) do
        local w = by_conn(conn)
        if w then read_worker(w) end
      end
      if state and now() - last_commit >= COMMIT_EVERY then commit() end
      if shared and shared_commit_due(now()) <= 0 then commit() end
    end
  end, function(e)
    if type(e) == "string" and e:find("interrupted!$") then
      interrupted = true
      return "interrupted"
    end
    if getmetatable(e) == BadInput then return e end
    return debug.traceback(tostring(e), 2)
  end)

  -- stop the workers: each finishes the callback it is in, sends what it has, and leaves;
  -- what they send meanwhile is handled as ever (so nothing done is reported as not done)
  if not ok then
    if interrupted then
      stop("interrupted", M.FATAL, "interrupted")
    elseif getmetatable(err) == BadInput then
      stop("fatal", M.BAD_INPUT, err.message)
    else
      stop("fatal", M.FATAL, err)
      -- an error of forage's own may have left a result half handled (acked, its follows
      -- not pushed): the state keeps its last commit
      if state and not state.failed then state:abandon(tostring(err), "error") end
    end
  end
  stopping = true
  check_signals()
  if hard_stop then
    -- a second signal: the workers go now; what they held is not acked, so a state keeps it
    for _, w in ipairs(workers) do
      if w.proc and w.proc:alive() then w.proc:kill() end
      if w.conn then w.conn:close() w.conn = nil end
    end
  end
  for _, w in ipairs(workers) do
    if w.conn then
      local queued = w.conn:send_nowait { stop = true }
      w.queued = queued
      if not queued then w.conn:close() w.conn = nil end
    end
  end
  local deadline = now() + STOP_WAIT
  while now() < deadline do
    local conns = worker_conns()
    if #conns == 0 then break end
    flush_workers()
    local ready = forage.wait(conns, 0.05)
    for _, conn in ipairs(ready) do
      local w = by_conn(conn)
      local msg, why = conn:recv(0)
      if msg then
        pcall(handle_message, w, msg)
      elseif why == "closed" then
        conn:close()
        w.conn = nil
      end
    end
  end
  for _, w in ipairs(workers) do
    if w.conn then w.conn:close() w.conn = nil end
    if w.proc then
      w.proc:join(1)
      if w.proc:alive() then w.proc:kill() w.proc:join() end
    end
  end
  if stats.finished == "done" and ninflight + fr:counts().queued > 0 then
    -- a worker stopped short of its last results (killed at the deadline)
    stop("fatal", M.FATAL, "the workers did not finish")
  end

  core.restore_signals()
  if shared then
    -- the last commit, retried while Redis is away (for the grace, at most), then this
    -- host leaves: what it still holds goes back to the queue for the others
    local until_t = now() + (run.grace or GRACE)
    repeat
      commit()
      if shared.pending and not shared.lost and stats.exit_code ~= M.FATAL then forage.sleep(0.2) end
    until not shared.pending or shared.lost or stats.exit_code == M.FATAL or now() >= until_t
    if shared.pending and not shared.lost then
      log:warn("redis: the last commit could not be sent; this host's requests return to the queue when its "
        .. "lease ends (%g s)", s.redis_lease or 30)
    end
    shared:leave(stats.finished == "done" and "done" or "left")
  elseif stats.finished == "done" and ninflight + fr:counts().queued == 0 then
    commit("done")
  else
    commit()
  end

  -- what was not done is not lost: it stays in the state, or goes to the failed output
  -- with the reason
  local ended_short = stats.finished ~= "done" and stats.finished ~= "max_pages" and stats.finished ~= "max_items"
  if not state and not shared and ended_short then
    local reason = stop_reason or stats.finished
    for _, entry in pairs(inflight) do fail_request(entry.req, "not done: " .. tostring(reason)) end
    while true do
      local reqs = fr:pop(1000)
      if #reqs == 0 then break end
      for _, req in ipairs(reqs) do fail_request(req, "not done: " .. tostring(reason)) end
    end
    if stats.exit_code == M.NO_PROXY or interrupted or signal_name then
      while not start_done do
        local good, req = pcall(start_it)
        if not good or not req then break end
        fail_request(req, "not done: " .. tostring(reason))
      end
    end
  end

  if leases then proxy_summary() end
  local elapsed = now() - started_at
  stats.elapsed = elapsed
  stats.pages_per_s = elapsed > 0 and (stats.pages - pages_before) / elapsed or 0
  local cpu = os.clock() - cpu0 + cpu_of_dead
  for _, w in ipairs(workers) do cpu = cpu + (w.cpu or 0) end
  stats.cpu_seconds = cpu
  stats.message = stop_reason
  if stats.exit_code == M.NO_PROXY then
    local lines = { "no live proxy left:" }
    for _, p in ipairs(stats.proxies) do
      lines[#lines + 1] = ("  %s: %s (%s)"):format(p.url, p.state or "?", p.last_error or "no error recorded")
    end
    stats.message = table.concat(lines, "\n")
  end
  stats.output = run.output
  progress:finish(snapshot_progress())
  sink:close()
  fr:close()
  if state then
    stats.state = s.state
    state:close()
  end
  if shared then shared:close() end
  if leases and leases.close then leases:close() end
  if run.stats then output.write_json(run.stats, stats) end
  if interrupted then error("interrupted", 0) end
  return stats
end

return M
