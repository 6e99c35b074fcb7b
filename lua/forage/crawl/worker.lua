-- A crawl worker: a process driving its share of the crawl's slots with one libcurl multi
-- handle, and running the callbacks of its pages.
--
-- Each slot leases a proxy from the shared lease table and keeps it until it breaks; a slot
-- without a proxy stays idle (no request ever goes out without one when proxies are given).
-- The parent sends requests only as far as the worker says it has room (`free`, counted
-- against `got`, the requests it has received), so requests never pile up in a worker that
-- cannot serve them; the worker gives back what it holds when none of its slots has a
-- proxy. One poll waits for the transfers and for the parent's messages.
--
-- To the parent: { got, free, cpu, stats = {counter deltas}, results = { result, ... },
-- fatal = message? }. A result is { id, outcome, ... } with outcome one of
--   "ok"       the callback ran: status, url, bytes, items, follows, proxy, cached
--   "proxy"    a proxy failure (the proxy was charged): kind, reason, proxy
--   "ban"      a ban signal (the proxy cools): status, retry_after, proxy
--   "retry"    an origin failure worth retrying (5xx, timeout without proxy...): kind, reason
--   "fail"     a final failure (a 404, a redirect loop, a callback error): reason
--   "robots"   forbidden by robots.txt
--   "returned" given back unstarted
local forage = require "forage"
local page_mod = require "forage.crawl.page"
local cookies_mod = require "forage.crawl.cookies"
local robots_mod = require "forage.crawl.robots"
local retry_after = require "forage.crawl.retry_after"

local M = {}

-- Statuses retried as origin failures (Scrapy's RETRY_HTTP_CODES less 429, a ban here).
local RETRY_STATUS = { [500] = true, [502] = true, [503] = true, [504] = true, [522] = true, [524] = true,
  [408] = true }
-- Transport failures that no retry can mend.
local FINAL_KINDS = { too_large = true, too_many_redirects = true }
-- Transport failures that, through a proxy, are the proxy's.
local PROXY_KINDS = { proxy = true, timeout = true, connect = true }

local RECHECK_PROXIES = 0.1     -- seconds between lease attempts of slots without a proxy
local GIVE_BACK_AFTER = 0.5     -- seconds pending requests wait in a worker with no proxy

-- A GET without a body: its fingerprint (the URL's) is its cache key.
local function cacheable(req)
  return req.body == nil and (req.method == nil or req.method:upper() == "GET")
end

local function host_key(u)
  return u:match("^(%a[%w+.-]*://[^/?#]*)") or u
end

-- Runs the worker loop until the parent says stop or goes away. conn: this worker's end of
-- its pipe; s: the checked spider; w: { first = first slot (1-based), count, leases }.
function M.run(conn, s, w)
  require("forage.core").ignore_interrupts()   -- Ctrl-C is the parent's to handle: it stops us in order
  local http = forage.http
  local now = forage.now
  local leases = w.leases
  local proxies = s.proxies
  local masked = {}
  for i, p in ipairs(proxies or {}) do masked[i] = require("forage.crawl.spider").mask(p) end
  local client = http.client { max = w.count + 4 }
  local fd = conn:fileno()
  local cache = w.cache

  -- A slot is busy (a transfer of its own in flight), idle (in `idle`: it holds a proxy, or
  -- there are none), or needy (in `needy`: idle without a proxy). Kept as a stack and a set
  -- so that no step scans every slot: a worker may drive hundreds.
  local idle, needy, busy = {}, {}, 0
  for i = w.count, 1, -1 do
    local slot = { index = w.first + i - 1, jar = s.cookies and cookies_mod.jar() or nil }
    if proxies then needy[slot] = true else idle[#idle + 1] = slot end
  end
  local pending, phead, ptail = {}, 1, 0         -- requests received, not started
  local finished = {}                            -- transfers done, to handle
  local results = {}
  local stats = { skipped_links = 0, offsite = 0, depth_dropped = 0, cache_hits = 0, cache_stores = 0 }
  local got = 0
  local robots_rules, robots_waiting = {}, {}
  local last_progress = now()
  local draining = false   -- the parent stops the crawl: no new transfer starts
  local next_proxy_check = 0
  local fatal

  local base_cookie
  if type(s.cookies) == "table" then
    local parts = {}
    for k, v in pairs(s.cookies) do parts[#parts + 1] = k .. "=" .. v end
    table.sort(parts)
    base_cookie = table.concat(parts, "; ")
  end

  local function push_front(req)
    phead = phead - 1
    pending[phead] = req
  end

  -- Makes the request tables of a page's follows.
  local follows
  local function add_request(page, absolute, callback, opts)
    local host = absolute:match("^%a[%w+.-]*://([^/?#]*)") or ""
    host = host:gsub("^.*@", ""):lower()
    if s.allowed_domains then
      local name = host:gsub(":%d+$", "")
      local ok = false
      for _, d in ipairs(s.allowed_domains) do
        if name == d or name:sub(-#d - 1) == "." .. d then ok = true break end
      end
      if not ok then
        stats.offsite = stats.offsite + 1
        return false
      end
    end
    local depth = page.depth + 1
    if s.depth_limit > 0 and depth > s.depth_limit then
      stats.depth_dropped = stats.depth_dropped + 1
      return false
    end
    local req = { url = absolute, callback = callback, depth = depth }
    if opts then
      req.meta, req.priority, req.dont_filter = opts.meta, opts.priority, opts.dont_filter
      req.headers, req.method, req.body = opts.headers, opts.method, opts.body
    end
    follows[#follows + 1] = req
    return true
  end

  local ctx = { callbacks = s.callbacks, stats = stats, add_request = add_request }

  -- Runs the callback of a response: an "ok" result, or "fail" with the traceback.
  local function run_callback(req, page, base)
    follows, ctx.items = {}, {}
    local fn = s.callbacks[req.callback or "parse"]
    local ok, ret = xpcall(fn, function(e)
      if getmetatable(e) == page_mod.Fatal then return e end
      if type(e) ~= "string" and not (getmetatable(e) or {}).__tostring then
        e = ("(an error object of type %s)"):format(type(e))
      end
      return M.spider_traceback(tostring(e))
    end, page)
    page_mod.close(page)
    if not ok then
      if getmetatable(ret) == page_mod.Fatal then
        fatal = ret.message
        base.outcome, base.reason = "fail", ret.message
        return base
      end
      base.outcome, base.reason = "fail", "callback '" .. (req.callback or "parse") .. "' raised: " .. tostring(ret)
      return base
    end
    local items = ctx.items
    if type(ret) == "table" then
      if ret[1] ~= nil and type(ret[1]) == "table" then
        for _, item in ipairs(ret) do items[#items + 1] = item end
      else
        items[#items + 1] = ret
      end
    elseif ret ~= nil then
      base.outcome = "fail"
      base.reason = ("callback '%s' returned a %s (return an item table, a list of them, or nothing)")
        :format(req.callback or "parse", type(ret))
      return base
    end
    base.outcome, base.items, base.follows = "ok", items, follows
    return base
  end

  -- Handles a response (or a transfer failure) of req made on slot through proxy p.
  local function handle(slot, req, p, r, message, kind, err)
    local base = { id = req.id, proxy = p, url = req.url }
    if not r then
      base.kind, base.reason = kind, message
      if proxies and PROXY_KINDS[kind] then
        -- the proxy's last error, without the URL (the lease table keeps 96 bytes of it)
        local why = err and (kind .. ": " .. tostring(err.message)) or message
        local after = leases:report(slot.index, false, why)
        base.outcome, base.cooled = "proxy", after ~= p or nil
        slot.proxy = after
      else
        if proxies then leases:report(slot.index, true) end
        base.outcome = FINAL_KINDS[kind] and "fail" or "retry"
      end
      return base
    end
    base.status, base.bytes, base.url = r.status, #(r.body or ""), r.url
    if slot and slot.jar and r.headers and r.headers["set-cookie"] then
      slot.jar:store(r.url, r.headers["set-cookie"])
    end
    local page = page_mod.new(req, r, ctx, p and masked[p])
    local banned = s.ban_status[r.status]
    if not banned and s.banned and r.status < 300 then
      local ok, verdict = pcall(s.banned, page)
      if not ok then
        page_mod.close(page)
        base.outcome, base.reason = "fail", "banned() raised: " .. tostring(verdict)
        return base
      end
      banned = verdict
    end
    if banned then
      page_mod.close(page)
      local wait = r.headers and r.headers["retry-after"] and retry_after.seconds(r.headers["retry-after"])
      base.outcome, base.retry_after = "ban", wait
      base.reason = ("banned: HTTP %d%s"):format(r.status, s.ban_status[r.status] and "" or " (banned() said so)")
      if proxies and slot then
        slot.proxy = leases:cool(slot.index, wait or 0, base.reason)
        base.cooled = true
      end
      return base
    end
    if proxies and slot then leases:report(slot.index, true) end
    if cache and not r.from_cache and r.status < 500 and cacheable(req) and cache:put(req.fp, r) then
      stats.cache_stores = stats.cache_stores + 1
    end
    if RETRY_STATUS[r.status] then
      page_mod.close(page)
      base.outcome, base.reason = "retry", "HTTP " .. r.status
      return base
    end
    if r.status < 200 or r.status >= 300 then
      page_mod.close(page)
      base.outcome, base.reason = "fail", "HTTP " .. r.status
      return base
    end
    base.cached = r.from_cache or nil
    return run_callback(req, page, base)
  end

  local function request_options(slot, req, p, u)
    local headers = s.headers
    if req.headers then
      headers = {}
      for k, v in pairs(s.headers or {}) do headers[k] = v end
      for k, v in pairs(req.headers) do headers[k] = v end
    end
    local cookie = slot.jar and slot.jar:header(u)
    if base_cookie then cookie = cookie and (base_cookie .. "; " .. cookie) or base_cookie end
    return {
      url = u, method = req.method, body = req.body, headers = headers,
      proxy = p and proxies[p] or nil,
      timeout = s.timeout, connect_timeout = s.connect_timeout,
      follow = s.follow_redirects, max_bytes = s.max_bytes, user_agent = s.user_agent,
      cookies = cookie or nil,
    }
  end

  local start_request
  -- Fetches robots.txt of req's host on slot, then goes on with req.
  local function fetch_robots(slot, req, p, key)
    robots_rules[key] = "pending"
    robots_waiting[key] = {}
    client:submit(request_options(slot, { method = "GET" }, p, key .. "/robots.txt"), function(r, message, kind)
      finished[#finished + 1] = { robots = key, slot = slot, req = req, p = p, r = r, message = message, kind = kind }
    end)
    return true
  end

  start_request = function(slot, req, p)
    if s.obey_robots then
      local key = host_key(req.url)
      local rules = robots_rules[key]
      if rules == nil then return fetch_robots(slot, req, p, key) end
      if rules == "pending" then
        local list = robots_waiting[key]
        list[#list + 1] = req
        return false
      end
      local path = req.url:match("^%a[%w+.-]*://[^/?#]*(.*)$")
      if path == "" then path = "/" end
      if not rules:allowed(s.user_agent, path) then
        results[#results + 1] = { id = req.id, outcome = "robots", url = req.url }
        return false
      end
    end
    local ok, err = pcall(client.submit, client, request_options(slot, req, p, req.url),
      function(r, message, kind, error_object)
        finished[#finished + 1] = { slot = slot, req = req, p = p, r = r, message = message, kind = kind,
          err = error_object }
      end)
    if not ok then   -- options the client refuses: this request fails, the worker goes on
      results[#results + 1] = { id = req.id, outcome = "fail", url = req.url,
        reason = "cannot send the request: " .. tostring(err):gsub("^[^:]*:%d+: ", "") }
      return false
    end
    return true
  end

  -- An idle slot goes back to the stack, or to the needy when it has no proxy.
  local function park(slot)
    if proxies and not slot.proxy then needy[slot] = true else idle[#idle + 1] = slot end
  end

  local function on_robots(f)
    local key = f.robots
    if not f.r and proxies and PROXY_KINDS[f.kind] then
      -- the proxy failed, not the site: try robots again on another proxy
      leases:report(f.slot.index, false, f.message)
      robots_rules[key] = nil
      push_front(f.req)
      for _, req in ipairs(robots_waiting[key]) do push_front(req) end
      robots_waiting[key] = nil
      return
    end
    if proxies then leases:report(f.slot.index, true) end
    robots_rules[key] = robots_mod.for_status(f.r and f.r.status or 599, f.r and f.r.body or "")
    push_front(f.req)
    for _, req in ipairs(robots_waiting[key]) do push_front(req) end
    robots_waiting[key] = nil
  end

  -- A request arrives: served from the cache at once, or queued for a slot.
  local function receive(req)
    got = got + 1
    if cache and cacheable(req) then
      local r = cache:get(req.fp)
      if r then
        stats.cache_hits = stats.cache_hits + 1
        r.from_cache = true
        finished[#finished + 1] = { req = req, r = r }
        return
      end
    end
    ptail = ptail + 1
    pending[ptail] = req
  end

  -- Idle slots without a proxy look for one now and then (a proxy freed or revived), so
  -- that this worker can tell the parent it has room. Then pending requests start on idle
  -- slots that hold a proxy (or on any idle slot without proxies). Returns the seconds
  -- until a paced proxy may go, or nil.
  local function assign()
    if proxies and now() >= next_proxy_check then
      for slot in pairs(needy) do
        slot.proxy = leases:acquire(slot.index)
        if slot.proxy then
          needy[slot] = nil
          idle[#idle + 1] = slot
        end
      end
      next_proxy_check = now() + RECHECK_PROXIES
    end
    local wake, paced
    while phead <= ptail and #idle > 0 do
      local slot = idle[#idle]
      idle[#idle] = nil
      local p
      if proxies then
        p = leases:acquire(slot.index)   -- what it holds, unless that proxy broke meanwhile
        -- on Redis: past the host's lease as this host last saw it renewed, its proxies may
        -- already be another host's: no request starts until a commit renews it
        if p and w.usable_until and now() > w.usable_until[1] then p = nil end
        slot.proxy = p
      end
      if p and p ~= slot.session_proxy then
        -- a slot that takes another proxy starts a new session: the old proxy's cookies stay with it
        if slot.jar and slot.session_proxy then slot.jar:clear() end
        slot.session_proxy = p
      end
      -- 0: go, and the gap is reserved; without proxies the one direct route is paced
      local wait = 0
      if s.delay > 0 and p then
        wait = leases:pace(p, s.delay)
      elseif s.delay > 0 and w.direct_pacer then
        wait = w.direct_pacer:pace(1, s.delay)
      end
      if proxies and not p then
        needy[slot] = true
      elseif wait > 0 then
        wake = math.min(wake or wait, wait)
        paced = paced or {}
        paced[#paced + 1] = slot
      else
        local req = pending[phead]
        pending[phead] = nil
        phead = phead + 1
        last_progress = now()
        if start_request(slot, req, p) then
          slot.busy = true
          busy = busy + 1
        else
          idle[#idle + 1] = slot
        end
      end
    end
    for _, slot in ipairs(paced or {}) do idle[#idle + 1] = slot end
    return wake
  end

  local function flush(force)
    local ready = #idle
    local queued = ptail - phead + 1
    local free = ready - queued
    if ready + busy > 0 then free = free + math.max(1, w.count // 4) end
    if free < 0 then free = 0 end
    if #results == 0 and not force and free == w.last_free then return end
    w.last_free = free
    local msg = { got = got, free = free, cpu = os.clock(), stats = stats, results = results, fatal = fatal }
    local ok, err = pcall(conn.send, conn, msg)
    if not ok then
      -- a value that cannot travel: find the results that carry one, send the rest
      for _, res in ipairs(results) do
        local one = { got = got, free = free, cpu = os.clock(), stats = {}, results = { res } }
        if not pcall(conn.send, conn, one) then
          local failed = { id = res.id, outcome = "fail", url = res.url, proxy = res.proxy,
            reason = "an item or follow cannot be sent to the parent: " .. tostring(err):gsub("^.-: ", "") }
          conn:send { got = got, free = free, cpu = os.clock(), stats = {}, results = { failed } }
        end
      end
      conn:send { got = got, free = free, cpu = os.clock(), stats = stats, results = {}, fatal = fatal }
    elseif err == nil then
      os.exit(0)   -- the parent is gone
    end
    results = {}
    for k in pairs(stats) do stats[k] = 0 end
  end

  while true do
    -- the parent's messages
    while conn:poll() do
      local msg, why = conn:recv(0)
      if msg == nil then
        if why == "timeout" then break end
        os.exit(0)   -- the parent is gone: nothing to report to
      end
      if msg.drain then
        -- the crawl stops: the transfers under way end, nothing new starts (below, what
        -- waits goes back to the parent, which keeps it queued)
        draining = true
      end
      if msg.stop then
        client:close()
        pcall(conn.send, conn, { got = got, free = 0, cpu = os.clock(), stats = stats, results = {} })
        conn:close()
        return
      end
      for _, req in ipairs(msg.reqs or {}) do receive(req) end
    end
    -- the transfers that ended
    while #finished > 0 do
      local list = finished
      finished = {}
      for _, f in ipairs(list) do
        if f.slot then
          f.slot.busy = nil
          busy = busy - 1
        end
        if f.robots then
          on_robots(f)
        else
          w.running[w.index] = f.req.id   -- a death from here on is this request's doing
          results[#results + 1] = handle(f.slot, f.req, f.p, f.r, f.message, f.kind, f.err)
          w.running[w.index] = 0
        end
        if f.slot then park(f.slot) end
      end
    end
    local wake = not draining and assign() or nil
    -- requests that no slot of ours can serve go back to the parent for another worker;
    -- while the crawl stops, every request that has not started goes back
    if phead <= ptail and (draining or proxies and busy == 0 and #idle == 0
        and now() - last_progress > GIVE_BACK_AFTER) then
      for i = phead, ptail do
        results[#results + 1] = { id = pending[i].id, outcome = "returned", url = pending[i].url }
        pending[i] = nil
      end
      phead, ptail = 1, 0
    end
    flush(false)
    if fatal then flush(true) end
    local timeout = 1
    if phead <= ptail and wake then timeout = wake end
    if next(needy) then timeout = math.min(timeout, RECHECK_PROXIES) end
    if #finished > 0 then timeout = 0 end
    client:step(timeout, fd)
  end
end

-- A traceback of the spider's frames only: forage's own (this worker loop, the process
-- that runs it) say nothing to the spider's author.
function M.spider_traceback(message)
  local lines = {}
  for line in debug.traceback(message, 3):gmatch("[^\n]+") do
    if line:find("[C]: in function 'xpcall'", 1, true) then break end
    lines[#lines + 1] = line
  end
  return table.concat(lines, "\n")
end

return M
