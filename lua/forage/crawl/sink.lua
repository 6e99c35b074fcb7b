-- Where a crawl's results go, in the parent: each item through the pipelines, on_item and
-- the output file, in order of arrival; each failure (a request that ran out of budget, an
-- item that cannot be written, a pipeline that raised) to the failed file, or to the stats
-- when there is none. Nothing is dropped silently: what cannot go one way goes the other.
local output = require "forage.crawl.output"
local core = require "forage.core"

local M = {}

local Sink = {}
Sink.__index = Sink

-- A file of an earlier run, cut back to the length a crawl state says is complete (the
-- lines past it belong to requests that will be fetched again); true, or nil, message.
local function cut_back(path, length)
  local f = io.open(path, "rb")
  local size = f and f:seek("end") or 0
  if f then f:close() end
  if size < length then
    return nil, ("%s holds %d bytes, but the crawl state says the first %d are written: was it changed or "
      .. "removed? (--fresh starts over)"):format(path, size, length)
  end
  if size > length then
    local ok, err = core.truncate(path, length)
    if not ok then return nil, ("%s: %s"):format(path, err) end
  end
  return true
end

-- sink.open(s, stats, log [, resume]) -> a sink, or nil and a message when the items' file
-- cannot be opened (before any request). s: the checked spider (its run options name the
-- files). resume: what a crawl state says of the files of earlier runs ({ items = { path,
-- length }, failed = { path, length } }): each is cut back to that length and appended to.
function M.open(s, stats, log, resume)
  local run = s.run
  local self = setmetatable({ s = s, stats = stats, log = log, failures = {} }, Sink)
  resume = resume or {}
  if run.output then
    local before = resume.items
    if before and before.path ~= run.output then
      return nil, ("forage.crawl: this crawl's items go to %s (its state says so): give that output to resume, "
        .. "or --fresh to start over"):format(before.path)
    end
    if before then
      local ok, err = cut_back(before.path, before.length)
      if not ok then return nil, "forage.crawl: output: " .. err end
    end
    local out, err = output.open(run.output, before and { append = true } or nil)
    if not out then return nil, "forage.crawl: output: " .. tostring(err) end
    self.items_out = out
  end
  -- the failed file is opened at the first failure only
  self.failed_path = run.failed or (run.output and output.failed_path(run.output)) or nil
  -- on resume, the failed file keeps what was committed (nothing when the state has no
  -- record of it: lines there were written after the last commit, and come again)
  local failed_before = resume.failed
  if resume.resumed and self.failed_path then
    local length = failed_before and failed_before.path == self.failed_path and failed_before.length or 0
    local f = io.open(self.failed_path, "rb")
    if f then
      f:close()
      local ok, err = cut_back(self.failed_path, length)
      if not ok then return nil, "forage.crawl: failed file: " .. err end
      self.failed_append = length > 0
      -- until this run opens it, the failed file stays as committed: its record is kept
      if length > 0 then self.failed_committed = { path = self.failed_path, length = length } end
    end
  end
  -- with a state, items past max_items are written, not dropped: the pages that made them
  -- are acknowledged, and a crawl resumed with a larger limit would miss them otherwise
  self.keep_past_limit = s.state ~= nil or s.redis ~= nil
  return self
end

-- What a crawl state records of the files: { items = { path, length }, failed = ... },
-- and the open files to sync before it does.
function Sink:files()
  local record, files = {}, {}
  for key, out in pairs { items = self.items_out, failed = self.failed_out } do
    if out.file ~= io.stdout then
      record[key] = { path = out.path, length = out.file:seek("end") }
      files[#files + 1] = out.file
    end
  end
  if not record.failed and self.failed_committed then record.failed = self.failed_committed end
  return record, files
end

-- A failed record { url, callback, reasons, attempts, switches, depth [, item] }.
function Sink:failure(record)
  self.stats.failed = self.stats.failed + 1
  if self.failed_path and not self.failed_out then
    local out, err = output.open(self.failed_path, self.failed_append and { append = true } or nil)
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
      local kind
      ok, err, kind = self.failed_out:write(record)
      if not ok then
        -- the failed file refuses bytes (a full disk): the record is in the stats, and a
        -- crawl with a state stops without committing
        self.failures[#self.failures + 1] = record
        if kind == "io" then
          self.io_error = self.io_error or ("cannot write %s: %s"):format(self.failed_out.path, err)
        end
      end
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
  if s.max_items > 0 and stats.items >= s.max_items and not self.keep_past_limit then
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
    local ok, err, kind = self.items_out:write(item)
    if not ok then
      -- a file that refuses bytes (a full disk): a crawl with a state stops without
      -- committing, so that the page is fetched again when it resumes
      if kind == "io" then self.io_error = self.io_error or ("cannot write %s: %s"):format(self.items_out.path, err) end
      return item_failure(self, res, req, "cannot write the item: " .. tostring(err))
    end
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
  if not self.failed_path or #self.failures > 0 then stats.failures = self.failures end
  stats.failed_output = self.failed_out and self.failed_path or nil
end

return M
