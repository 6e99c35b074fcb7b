-- The examples of a blog post on Python's multiprocessing (processes, pools, a crawl that
-- chains list pages into detail pages through sticky proxies), rewritten for forage.
-- `make demo` runs it; so does `lua5.4 examples/demo.lua` after eval "$(make -s env)".
--
-- Until the crawl layer lands, the "site" is a function that answers like the blog's
-- practice site would (ten movies a page, a director each), so the chaining, the
-- callbacks and the completion check are the real ones, without the network.
local forage = require "forage"

local function section(title)
  print(("\n== %s "):format(title) .. string.rep("=", 60 - #title))
end

-- Python lists print as [1, 4, 9]; so do ours, to read like the blog.
local function show(list, n)
  local parts = {}
  for i = 1, n or #list do parts[i] = tostring(list[i]) end
  return "[" .. table.concat(parts, ", ") .. "]"
end

section("Process: hello bob")
do
  local p = forage.process(function(name) print("hello", name) end, "bob")
  p:start()
  p:join()
end

section("Pool(5):map(f, {1, 2, 3})")
do
  local pool <close> = forage.pool(5)
  print(show(pool:map(function(x) return x * x end, { 1, 2, 3 })))
end

section("process ids")
do
  local function info(title)
    print(title)
    print("parent process:", forage.getppid())
    print("process id:", forage.getpid())
  end
  info("main line")
  local p = forage.process(function(name) info("function f") print("hello", name) end, "bob"):start()
  p:join()
end

section("Pipe")
do
  local parent_conn, child_conn = forage.pipe()
  local p = forage.process(function(conn)
    conn:send({ 42, nil, "hello" })
    conn:close()
  end, child_conn):start()
  local got = parent_conn:recv()
  print(show(got, 3))   -- prints "[42, nil, hello]"
  p:join()
end

section("the ways to give a pool work (examples/pool_basics.lua)")
dofile(((arg and arg[0] or ""):match("^(.*/)") or "./") .. "pool_basics.lua")

section("the blog's crawl: 20 workers, 8 sticky proxies, list -> detail pages")
do
  -- What the practice site answers: page n lists ten movies, each movie has a director.
  -- The "proxies" are names here; proxy-3 is flaky: its failures cool it down, and the
  -- worker holding it is given another, while workers without a proxy get no task.
  local proxies = {}
  for i = 1, 8 do proxies[i] = string.format("http://proxy-%d:8080", i) end

  local function via_proxy()
    local proxy = forage.worker.resource()
    assert(proxy, "a task never runs without a proxy")
    if proxy:find("proxy-3", 1, true) then
      forage.worker.report(false, "connect timeout")
      error("connect timeout via " .. proxy)
    end
    forage.worker.report(true)
    return proxy
  end
  local function fetch_list(page)
    forage.sleep(0.01)
    via_proxy()
    local urls = {}
    for i = 1, 10 do urls[i] = string.format("/detail/%d", (page - 1) * 10 + i) end
    return urls
  end
  local function fetch_detail(url)
    forage.sleep(0.005)
    via_proxy()
    local id = tonumber(url:match("%d+"))
    return url .. "," .. "Director " .. string.char(65 + id % 26)
  end

  local pool <close> = forage.pool { workers = 20, resources = proxies,
                                     resource = { max_failures = 2, cooldown = 30 } }
  local directors, retries = {}, 0
  local t0 = forage.now()
  local function submit(f, arg, on_done, attempt)
    pool:apply_async(f, { arg }, {
      on_done = on_done,
      on_error = function(e)
        retries = retries + 1
        if attempt < 3 then submit(f, arg, on_done, attempt + 1) else print("giving up on", arg, e.message) end
      end,
    })
  end
  local function save(line) directors[#directors + 1] = line end
  for page = 1, 5 do
    submit(fetch_list, page, function(urls)
      for _, url in ipairs(urls) do submit(fetch_detail, url, save, 1) end
    end, 1)
  end
  assert(pool:drain(60))   -- exact completion, callbacks included: no polling of private state
  table.sort(directors, function(a, b) return tonumber(a:match("%d+")) < tonumber(b:match("%d+")) end)
  for i = 1, 3 do print("director:", directors[i]) end
  print(string.format("collected %d detail pages from 5 list pages in %.2f s (%d retries)",
    #directors, forage.now() - t0, retries))
  for _, r in ipairs(pool:resources()) do
    print(string.format("  %-22s %-8s leases %d  ok %3d  failed %d%s", r.value, r.state, r.leases,
      r.successes, r.failures, r.reason and ("  (" .. r.reason .. ")") or ""))
  end
end
