-- Where a crawl's results go, in the parent: each item through the pipelines, on_item and
-- the output file, in order of arrival; each failure (a request that ran out of budget, an
-- item that cannot be written, a pipeline that raised) to the failed file, or to the stats
-- when there is none. Nothing is dropped silently: what cannot go one way goes the other.
local output = require "forage.crawl.output"

local M = {}

local Sink = {}
Sink.__index = Sink

-- sink.open(s, stats, log) -> a sink, or nil and a message when the items' file cannot be
-- opened (before any request). s: the checked spider (its run options name the files).
function M.open(s, stats, log)
  local run = s.run
  local self = setmetatable({ s = s, stats = stats, log = log, failures = {} }, Sink)
  if run.output then
    local out, err = output.open(run.output)
    if not out then return nil, "forage.crawl: output: " .. tostring(err) end
    self.items_out = out
  end
  -- the failed file is opened at the first failure only
  self.failed_path = run.failed or (run.output and output.failed_path(run.output)) or nil
  return self
end

-- A failed record { url, callback, reasons, attempts, switches, depth [, item] }.
function Sink:failure(record)
  self.stats.failed = self.stats.failed + 1
  if self.failed_path and not self.failed_out then
    local out, err = output.open(self.failed_path)
    if not out then
      self.log:error("cannot write the failed file (%s); failures are kept in the stats", tostring(err))
      self.failed_path = nil
    end
    self.failed_out = out
  end
  if self.failed_out then
    local ok, err = self.failed_out:write(record)
    if not ok then
      record.item = nil
      record.reasons[#record.reasons + 1] = "cannot write the item: " .. tostring(err)
      self.failed_out:write(record)
    end
  else
    self.failures[#self.failures + 1] = record
  end
end

-- req failed for good; reason (if any) joins the reasons it met.
function Sink:fail_request(req, reason)
  local reasons = req.reasons or {}
  if reason then reasons[#reasons + 1] = reason end
  self:failure { url = req.url, callback = req.callback or "parse", reasons = reasons,
    attempts = req.attempts or 0, switches = req.switches or 0, depth = req.depth or 0 }
end

-- A failure about an item of req's page (res); the item goes with it when it can.
local function item_failure(self, res, req, reason, item)
  self:failure { url = res.url, callback = req.callback, reasons = { reason }, attempts = req.attempts,
    switches = req.switches, depth = req.depth, item = item }
end

-- One item of req's page: the pipelines in order (nil drops it), then the output, then
-- on_item; max_items counts the items kept.
local function one_item(self, res, req, item)
  local s, stats = self.s, self.stats
  if s.max_items > 0 and stats.items >= s.max_items then
    stats.items_dropped = stats.items_dropped + 1
    return
  end
  local info = { url = res.url, callback = req.callback }
  for _, pipeline in ipairs(s.pipelines or {}) do
    local ok, out = xpcall(pipeline, debug.traceback, item, info)
    if not ok then return item_failure(self, res, req, "pipeline raised: " .. tostring(out), item) end
    item = out
    if item == nil then
      stats.items_dropped = stats.items_dropped + 1
      return
    end
  end
  if self.items_out then
    local ok, err = self.items_out:write(item)
    if not ok then return item_failure(self, res, req, "cannot write the item: " .. tostring(err)) end
  end
  stats.items = stats.items + 1
  if s.on_item then
    local ok, err = xpcall(s.on_item, debug.traceback, item, info)
    if not ok then item_failure(self, res, req, "on_item raised: " .. tostring(err), item) end
  end
end

-- The items of one result (res) of request req.
function Sink:items(res, req)
  for _, item in ipairs(res.items or {}) do one_item(self, res, req, item) end
end

-- Closes the files; the stats say where failures went.
function Sink:close()
  local stats = self.stats
  if self.items_out and (self.items_out.dropped_keys or 0) > 0 then
    -- CSV columns come from the first item: keys only later items have are not in the file
    stats.csv_dropped_keys = self.items_out.dropped_keys
    self.log:warn("%d item keys were not written: the CSV columns are the first item's", self.items_out.dropped_keys)
  end
  if self.items_out then self.items_out:close() end
  if self.failed_out then self.failed_out:close() end
  if not self.failed_path then stats.failures = self.failures end
  stats.failed_output = self.failed_out and self.failed_path or nil
end

return M
