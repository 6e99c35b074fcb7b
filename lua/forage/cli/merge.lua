-- forage merge --redis URL -o FILE: the items of a crawl run on several hosts, each once.
-- Each host wrote its own output; Redis knows how much of each is committed (the items of
-- pages acknowledged). What a killed host wrote past that belongs to pages that other hosts
-- fetched again, so it is left out. Run on each machine, it merges that machine's outputs.
local M = {
  summary = "Join the outputs of a crawl run on several hosts (Redis), each item once.",
  description = "Write to -o FILE the committed part of every output of the crawl that this machine's hosts "
    .. "wrote (as Redis records them: machine, path, committed bytes), items first, then failures to the "
    .. "failed file beside FILE. What a killed host wrote past its last commit is left out: other hosts "
    .. "fetched those pages again. On several machines, run it on each and concatenate the results.",
}

function M.configure(command)
  command:option("--redis", "The Redis the crawl ran on: redis://[user:password@]host:port/db."):argname("URL")
  command:option("--redis-prefix", "The crawl's name in Redis (needed when Redis holds several)."):argname("NAME")
  command:option("-o --output", "Where the merged items go (JSON Lines; the failures beside it)."):argname("FILE")
end

-- Copies the first length bytes of path to out; nil, message when the file is shorter.
local function copy(path, length, out)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local left = length
  while left > 0 do
    local chunk = f:read(math.min(left, 1 << 20))
    if not chunk then break end
    out:write(chunk)
    left = left - #chunk
  end
  f:close()
  if left > 0 then return nil, ("%s holds fewer bytes than the %d committed: was it changed?"):format(path, length) end
  return true
end

function M.run(parsed, cli)
  if not parsed.redis or not parsed.output then
    return cli.fail(cli.USAGE, "merge: give the crawl's Redis and the output: forage merge --redis URL -o FILE")
  end
  local redis = require "forage.crawl.redis"
  local crawls, err = redis.inspect(parsed.redis, parsed.redis_prefix)
  if not crawls then return cli.fail(cli.USAGE, "merge: " .. err) end
  if #crawls ~= 1 then
    local names = {}
    for _, c in ipairs(crawls) do names[#names + 1] = c.prefix end
    return cli.fail(cli.USAGE, #crawls == 0 and "merge: no such crawl in " .. redis.mask(parsed.redis)
      or "merge: Redis holds several crawls; choose one with --redis-prefix (" .. table.concat(names, ", ") .. ")")
  end
  local me = redis.hostname()
  local output = require "forage.crawl.output"
  local targets = { items = parsed.output, failed = output.failed_path(parsed.output) }
  local counts = { items = 0, failed = 0 }
  for _, kind in ipairs { "items", "failed" } do
    local out
    for _, o in ipairs(crawls[1].outputs) do
      if o.kind == kind and o.host == me and (o.length or 0) > 0 then
        if not out then
          local e
          out, e = io.open(targets[kind], "wb")
          if not out then return cli.fail(cli.FAILED, "merge: " .. tostring(e)) end
        end
        local ok, e = copy(o.path, o.length, out)
        if not ok then
          out:close()
          return cli.fail(cli.FAILED, "merge: " .. tostring(e))
        end
        counts[kind] = counts[kind] + 1
      end
    end
    if out then out:close() end
  end
  io.stderr:write(("forage: merged %d item files into %s%s\n"):format(counts.items, parsed.output,
    counts.failed > 0 and (" and %d failed files into %s"):format(counts.failed, targets.failed) or ""))
  return cli.OK
end

return M
