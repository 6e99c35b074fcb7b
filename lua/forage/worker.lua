-- forage.worker: what a task knows of the worker running it, and its sticky resource.
--
-- Inside a task of a pool created with `resources = list`, the worker holds one resource
-- (a proxy, say) and keeps it across tasks until it breaks: report failures with
-- report(false, reason); max_failures of them in a row, or swap_resource(), put it in
-- cooldown and lease the worker another. Outside a pool worker these return nil.
local core = require "forage.core"

local M = {}

-- The lease table and the resources of this worker's pool, or nil.
local function pool_resources()
  local config = core.worker_config()
  if config and config.leases then return config.leases, config.resources end
end

-- worker.slot() -> this worker's slot in its pool (1..workers), or nil outside a worker.
function M.slot()
  return core.worker_slot()
end

-- Calls the lease table's method for this worker's slot and returns the resource whose
-- index it gives back; nil outside a pool worker with resources, or when none is held.
local function lease_call(method, ...)
  local leases, resources = pool_resources()
  if not leases then return nil end
  local i = leases[method](leases, core.worker_slot(), ...)
  return i and resources[i]
end

local function reason_of(reason)
  if reason ~= nil then return tostring(reason) end
end

-- worker.resource() -> the resource this worker holds, or nil.
function M.resource()
  return lease_call("held")
end

-- worker.report(ok [, reason]) -> the resource held afterwards (another one after
-- max_failures failures in a row), or nil when none is free.
function M.report(ok, reason)
  return lease_call("report", ok and true or false, reason_of(reason))
end

-- worker.swap_resource([reason]) -> another resource (or nil); the one held cools down.
function M.swap_resource(reason)
  return lease_call("swap", reason_of(reason))
end

-- worker.retire_resource([reason]) -> another resource (or nil); the one held never
-- comes back (a banned proxy).
function M.retire_resource(reason)
  return lease_call("retire", reason_of(reason))
end

return M
