-- A crawl's state in a directory, so that a crawl stopped in any way (Ctrl-C, SIGTERM,
-- kill -9 of the parent or of a worker, a reboot, no live proxy left) resumes where it was,
-- with no item missing and none written twice.
--
--   DIR/state.db   SQLite, WAL mode: the queued and in-flight requests, the seen set, the
--                  counters, the proxies' health, and how far each output file is complete
--   DIR/lock       a POSIX lock held by the running crawl (its pid inside)
--
-- How it stays right (docs/state.md says it for users):
-- - The frontier is the memory backend (src/frontier.c) with a journal: every push, ack and
--   retry is also a row written into the open SQLite transaction. A request is a row from
--   its push until its ack; a request popped and not acked is still a row, so whatever
--   was in flight when the crawl died is queued again when it resumes (at least once).
-- - Transactions are committed per batch (the engine commits every COMMIT_EVERY seconds
--   and when it stops), not per request. A page's follows are pushed before its ack, in
--   the same transaction or an earlier one.
-- - Items are written to the output file as they come; at each commit the file is flushed
--   and synced first, and its length is committed with the acks of the pages whose items
--   it holds. On resume the file is cut back to the committed length: the items past it
--   belong to pages that were not acked, which are fetched again and write them again.
--   The failed file is kept the same way.
local core = require "forage.core"
local args = require "forage.args"
local frontier_mod = require "forage.crawl.frontier"

local M = {}

M.SCHEMA = 1            -- the layout of state.db; another is refused, naming both
M.FILE = "state.db"
M.LOCK = "lock"

local encode, decode = core.encode, core.decode

local SCHEMA_SQL = [[
CREATE TABLE meta (key BLOB PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE request (
  id       INTEGER PRIMARY KEY,  -- the frontier's id of the request
  seq      INTEGER NOT NULL,     -- order of arrival: a new value at each push and retry
  host     BLOB    NOT NULL,
  priority INTEGER NOT NULL,
  record   BLOB    NOT NULL      -- the frontier's encoded request (forage.encode, data mode)
);
CREATE TABLE seen (fp BLOB NOT NULL);  -- appended: the memory set dedupes, so each fp once
]]

local State = {}
State.__index = State

local function sqlite()
  local ok, mod = pcall(require, "forage.sqlite")
  if not ok then error("forage.crawl: the crawl state needs forage.sqlite (built with libsqlite3): " .. mod, 0) end
  return mod
end

-- A message for a failure of the database file at path.
local function db_error(path, message, kind)
  local text = ("state %s: %s"):format(path, message)
  if kind == "corrupt" then
    text = text .. " (the file is left as it was; --fresh starts over)"
  elseif kind == "full" then
    text = text .. " (the disk is full; what was committed before is intact)"
  elseif kind == "readonly" then
    text = text .. " (the state directory cannot be written)"
  end
  return text
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- The meta table's values, decoded (data mode: bytes on disk never run code).
local function read_meta(db, path)
  local st, message, kind = db:prepare("SELECT key, value FROM meta")
  if not st then return nil, db_error(path, message, kind), kind end
  local meta = {}
  local good, ok
  good, ok, message, kind = pcall(st.each, st, function(key, value)
    if type(value) == "string" then
      local v, err = decode(value)
      if v == nil and err then error(("state %s: meta %s: %s"):format(path, args.show(key), err), 0) end
      value = v
    end
    meta[key] = value
  end)
  st:close()
  if not good then return nil, tostring(ok), "corrupt" end
  if not ok then return nil, db_error(path, message, kind), kind end
  return meta
end

-- state.open(dir, opts) -> a state, or nil and a message (the crawl stops with exit 2).
-- opts: name, hash (the spider's), fresh (start over), per_host.
function M.open(dir, opts)
  local fname = "forage.crawl.state.open"
  args.check(1, dir, "string", "open")
  opts = args.options(fname, opts, { name = true, hash = true, fresh = true, per_host = true })
  local made, mkdir_err = core.mkdir(dir)
  if not made then return nil, ("state directory %s: %s"):format(dir, mkdir_err) end
  local lock, lock_err, lock_kind = core.lock_file(dir .. "/" .. M.LOCK)
  if not lock then
    if lock_kind == "locked" then
      return nil, ("state directory %s is in use by another crawl (%s)"):format(dir, lock_err)
    end
    return nil, ("state directory %s: %s"):format(dir, lock_err)
  end
  local path = dir .. "/" .. M.FILE
  if opts.fresh then
    for _, suffix in ipairs { "", "-wal", "-shm" } do os.remove(path .. suffix) end
  end
  local self = setmetatable({ dir = dir, path = path, lock = lock, name = opts.name, hash = opts.hash }, State)
  local ok, message = self:_open_db()
  if not ok then
    self:close()
    return nil, message
  end
  return self
end

function State:_open_db()
  local path = self.path
  local db, message, kind = sqlite().open(path)
  if not db then return nil, db_error(path, message, kind) end
  self.db = db
  -- A state is a database with a meta table: the schema and the meta rows are committed in
  -- one transaction, so a crawl killed while it made its state leaves either a whole one or
  -- a database without tables (or an empty file), which is made anew. A file that is not a
  -- database at all fails here, before anything is written to it.
  local has_meta
  local st
  st, message, kind = db:prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
  if not st then return nil, db_error(path, message, kind) end
  local ok
  ok, message, kind = st:each(function(n) has_meta = n > 0 end)
  st:close()
  if not ok then return nil, db_error(path, message, kind) end
  if has_meta then
    -- an existing state is read, whole, before anything is written to it
    local meta, err = read_meta(db, path)
    if not meta then return nil, err end
    local schema = meta.schema
    if schema ~= M.SCHEMA then
      return nil, ("state %s was written with state schema %s by forage %s; this forage (%s) reads schema %d "
        .. "(--fresh starts over)"):format(path, tostring(schema), tostring(meta.forage), require("forage").version,
        M.SCHEMA)
    end
    if meta.name ~= self.name or meta.hash ~= self.hash then
      return nil, ("state %s belongs to spider '%s' (file hash %s), not to spider '%s' (file hash %s); "
        .. "--fresh starts over, or give another --state"):format(path, tostring(meta.name), tostring(meta.hash),
        tostring(self.name), tostring(self.hash))
    end
    self.meta = meta
    self.resumed = true
  end
  ok, message, kind = db:exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL")
  if not ok then return nil, db_error(path, message, kind) end
  if not has_meta then
    ok, message, kind = db:exec("BEGIN; " .. SCHEMA_SQL)
    if not ok then
      db:exec("ROLLBACK")
      return nil, db_error(path, message, kind)
    end
    ok, message = self:_prepare()
    if not ok then
      db:exec("ROLLBACK")
      return nil, message
    end
    self.meta = {}
    local started = { schema = M.SCHEMA, forage = require("forage").version, name = self.name, hash = self.hash,
      created = os.time() }
    ok, message, kind = self:_put_meta(started)   -- inside the schema's transaction
    if ok then ok, message, kind = db:exec("COMMIT") end
    if not ok then
      db:exec("ROLLBACK")
      return nil, db_error(path, message, kind)
    end
    for k, v in pairs(started) do self.meta[k] = v end
    return true
  end
  return self:_prepare()
end

function State:_prepare()
  local db = self.db
  local statements = {
    insert = "INSERT INTO request (id, seq, host, priority, record) VALUES (?, ?, ?, ?, ?)",
    update = "UPDATE request SET seq = ?, host = ?, priority = ?, record = ? WHERE id = ?",
    delete = "DELETE FROM request WHERE id = ?",
    seen = "INSERT INTO seen (fp) VALUES (?)",
    meta = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
  }
  self.st = {}
  for name, sql in pairs(statements) do
    local st, message, kind = db:prepare(sql)
    if not st then return nil, db_error(self.path, message, kind) end
    self.st[name] = st
  end
  return true
end

-- Writes meta entries (each value encoded with forage.encode, data mode), one row each,
-- into the open transaction (the schema's, or a commit's).
function State:_put_meta(entries)
  local st = self.st.meta
  for k, v in pairs(entries) do
    local ok, message, kind = st:run(k, encode(v))
    if not ok then return nil, message, kind end
  end
  return true
end

-- What an earlier run left: meta values (stats, outputs, proxies, finished ...).
function State:saved(key)
  return self.meta[key]
end

-- The journal the memory frontier writes through: each change a row of the open
-- transaction. A failed write stops the crawl (the engine sees the error at its commit).
local Journal = {}
Journal.__index = Journal

-- A write that failed ends the journal: SQLite may have rolled its transaction back, and a
-- later write would then commit on its own (an ack without the follows pushed before it).
-- The next commit reports the error and commits nothing.
local function journal_write(self, ok, message, kind)
  if not ok and not self.error then
    self.error = { message = message, kind = kind }
    self.off = true
  end
end

-- Opens the transaction the journal writes into (one BEGIN a commit, not one a write).
local function journal_begin(self)
  if not self.open then
    local ok, message, kind = self.state.db:exec("BEGIN")
    journal_write(self, ok, message, kind)
    self.open = ok
  end
  return not self.off
end

function Journal:pushed(id, host, priority, record, fp)
  if self.off or not journal_begin(self) then return end
  local st = self.state.st
  local seq = self.seq + 1
  self.seq = seq
  if fp then journal_write(self, st.seen:run(fp)) end
  journal_write(self, st.insert:run(id, seq, host, priority, record))
end

function Journal:retried(id, host, priority, record)
  if self.off or not journal_begin(self) then return end
  local seq = self.seq + 1
  self.seq = seq
  journal_write(self, self.state.st.update:run(seq, host, priority, record, id))
end

function Journal:acked(id)
  if self.off or not journal_begin(self) then return end
  journal_write(self, self.state.st.delete:run(id))
end

function Journal:seen(fp)
  if self.off or not journal_begin(self) then return end
  journal_write(self, self.state.st.seen:run(fp))
end

-- st:frontier{ per_host } -> the crawl's frontier: the memory backend, loaded with what the
-- state holds (every request not acked, in its order; the seen set), journaling every
-- change. nil, message when the database cannot be read.
function State:frontier(opts)
  local journal = setmetatable({ state = self, seq = 0 }, Journal)
  local fr = frontier_mod.memory { per_host = opts and opts.per_host or 0 }
  local db, path = self.db, self.path
  local ok, message, kind
  local st
  st, message, kind = db:prepare("SELECT fp FROM seen")
  if not st then fr:close() return nil, db_error(path, message, kind) end
  local seen = 0
  ok, message, kind = st:each(function(fp) fr:_restore_seen(fp) seen = seen + 1 end)
  st:close()
  if not ok then fr:close() return nil, db_error(path, message, kind) end
  st, message, kind = db:prepare("SELECT id, seq, host, priority, record FROM request ORDER BY seq")
  if not st then fr:close() return nil, db_error(path, message, kind) end
  local queued, max_id, max_seq = 0, 0, 0
  ok, message, kind = st:each(function(id, seq, host, priority, record)
    fr:_restore(id, host, priority, record)
    queued = queued + 1
    if id > max_id then max_id = id end
    if seq > max_seq then max_seq = seq end
  end)
  st:close()
  if not ok then fr:close() return nil, db_error(path, message, kind) end
  journal.seq = max_seq
  fr:_journal(journal, math.max(max_id, tonumber(self.meta.next_id) or 0))
  self.journal, self.fr = journal, fr
  self.loaded = { queued = queued, seen = seen }
  return fr
end

-- st:commit(entries [, files]) -> true, or nil, message, kind. files: open Lua files whose
-- written bytes must be on disk before the state says they are complete (synced first);
-- entries: meta values to store with it (stats, outputs ...). On failure nothing of this
-- transaction is kept: the state stays as the previous commit left it.
function State:commit(entries, files)
  local db = self.db
  if self.failed then
    -- after a failed commit the journal lost a transaction's changes: committing later ones
    -- (an ack whose follows were in the lost one) would lose requests; the state stays as
    -- the last good commit left it
    return nil, self.failed.message, self.failed.kind
  end
  local journal = self.journal
  if journal and journal.error then
    local e = journal.error
    return self:abandon(db_error(self.path, e.message, e.kind), e.kind)
  end
  for _, file in ipairs(files or {}) do
    local ok, message = core.fsync(file)
    if not ok then
      return self:abandon(("state: cannot sync an output before committing: %s"):format(message), "io")
    end
  end
  if not db:in_transaction() then db:exec("BEGIN") end
  entries = entries or {}
  if self.fr then entries.next_id = self.fr:_last_id() end
  entries.updated = os.time()
  local ok, message, kind = self:_put_meta(entries)
  if ok then ok, message, kind = db:exec("COMMIT") end
  if not ok then return self:abandon(db_error(self.path, message, kind), kind) end
  if journal then journal.open = false end
  for k, v in pairs(entries) do self.meta[k] = v end
  return true
end

-- st:abandon(message, kind) -> nil, message, kind: the open transaction is rolled back and
-- no later one is committed (a commit failed, or an output refused bytes): the state stays
-- as the last good commit left it.
function State:abandon(message, kind)
  if self.db:in_transaction() then self.db:exec("ROLLBACK") end
  self.failed = { message = message, kind = kind }
  if self.journal then self.journal.off, self.journal.open = true, false end
  return nil, message, kind
end

-- st:close(): closes the database (an open transaction is rolled back) and releases the
-- lock; idempotent.
function State:close()
  if self.db then
    if self.db:in_transaction() then self.db:exec("ROLLBACK") end
    for _, st in pairs(self.st or {}) do st:close() end
    self.db:close()
    self.db = nil
  end
  if self.lock then
    self.lock:release()
    self.lock = nil
  end
end
State.__close = State.close

-- state.read(dir) -> what `forage status` shows: meta values and counts, read without
-- changing anything (also while the crawl runs); or nil, message.
function M.read(dir)
  args.check(1, dir, "string", "read")
  local path = dir .. "/" .. M.FILE
  if not exists(path) then return nil, ("no crawl state in %s (no %s there)"):format(dir, M.FILE) end
  local db, message, kind = sqlite().open(path, { readonly = true })
  if not db then return nil, db_error(path, message, kind) end
  local meta, err = read_meta(db, path)
  if not meta then db:close() return nil, err end
  local info = { meta = meta, path = path }
  local st = db:prepare("SELECT count(*) FROM request")
  if st then
    st:each(function(n) info.requests = n end)
    st:close()
  end
  db:close()
  info.running_pid = core.lock_holder(dir .. "/" .. M.LOCK)
  return info
end

return M
