-- forage.sqlite (src/sqlite.c): the small binding the crawl's state is written with. Real
-- database files in a fresh directory per test; forked children report back through pipes
-- and are always reaped.
local forage = require "forage"
local sqlite = require "forage.sqlite"
local helpers = require "helpers"

local WAIT = 5   -- seconds: bounds a failure, never a success

local function reaped(p) return helpers.reaped(finally, p) end

local function make_dir() return helpers.make_dir("sqlite-spec") end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- The error raised by fn(...), with a "file:line: " position cut off.
local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return (tostring(err):gsub("^[^:]*:%d+: ", ""))
end

-- The rows of sql (bound to ...) as a list of lists of columns.
local function rows(db, sql, ...)
  local st = assert(db:prepare(sql))
  local got = {}
  assert.is_true(st:each(function(...) got[#got + 1] = table.pack(...) end, ...))
  st:close()
  for _, row in ipairs(got) do row.n = nil end
  return got
end

-- True when this process has a descriptor open on path.
local function has_open(path)
  local ls = assert(io.popen("ls -l /proc/" .. forage.getpid() .. "/fd 2>/dev/null"))
  local listing = ls:read("a")
  ls:close()
  return listing:find("-> " .. path .. "\n", 1, true) ~= nil
end

describe("forage.sqlite", function()
  local dir
  before_each(function() dir = make_dir() end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("says which SQLite it runs on", function()
    assert.is_string(sqlite.version)
    assert.truthy(sqlite.version:match("^3%.%d+%.%d+"))
  end)

  describe("open", function()
    it("creates a missing file by default, and a connection opened on it can be used", function()
      local path = dir .. "/new.db"
      local db = assert(sqlite.open(path))
      assert.is_true(db:exec("CREATE TABLE t (x)"))
      assert.truthy(exists(path))
      assert.equal("forage.sqlite.Database (" .. path .. ")", tostring(db))
      db:close()
      assert.equal("forage.sqlite.Database (closed)", tostring(db))
    end)

    it("does not create with create = false: nil, message, kind, and no file", function()
      local path = dir .. "/missing.db"
      local db, message, kind = sqlite.open(path, { create = false })
      assert.is_nil(db)
      assert.equal("unable to open database file", message)
      assert.equal("io", kind)
      assert.is_false(exists(path))
    end)

    it("fails to open a missing file read-only, with a kind, and creates nothing", function()
      local path = dir .. "/missing.db"
      local db, message, kind = sqlite.open(path, { readonly = true })
      assert.is_nil(db)
      assert.equal("unable to open database file", message)
      assert.equal("io", kind)
      assert.is_false(exists(path))
    end)

    it("opens an existing file read-only: it reads, and a write gives kind 'readonly'", function()
      local path = dir .. "/ro.db"
      local db = assert(sqlite.open(path))
      assert.is_true(db:exec("CREATE TABLE t (x); INSERT INTO t VALUES (7)"))
      db:close()
      local ro = assert(sqlite.open(path, { readonly = true }))
      assert.same({ { 7 } }, rows(ro, "SELECT x FROM t"))
      local ok, message, kind = ro:exec("INSERT INTO t VALUES (8)")
      assert.is_nil(ok)
      assert.equal("attempt to write a readonly database", message)
      assert.equal("readonly", kind)
      ro:close()
      db = assert(sqlite.open(path))
      assert.same({ { 7 } }, rows(db, "SELECT x FROM t"))
      db:close()
    end)

    it("raises on an unknown option, naming it and the known ones", function()
      local err = raised(sqlite.open, dir .. "/x.db", { readonyl = true })
      assert.equal("forage.sqlite.open: unknown option 'readonyl' (known: readonly, create, busy_timeout)", err)
      assert.is_false(exists(dir .. "/x.db"))
    end)

    it("raises on an option of the wrong type or range", function()
      assert.truthy(raised(sqlite.open, dir .. "/x.db", { busy_timeout = -1 }):find("busy_timeout", 1, true))
      assert.truthy(raised(sqlite.open, dir .. "/x.db", { readonly = "yes" }):find("readonly", 1, true))
      assert.truthy(raised(sqlite.open, dir .. "/x.db", 5):find("table expected", 1, true))
      assert.truthy(raised(sqlite.open, nil):find("string expected", 1, true))
    end)

    it("gives kind 'corrupt' and SQLite's message for a file that is not a database, and leaves it alone", function()
      local path = dir .. "/garbage.db"
      local garbage = string.rep("this is not a database, only text. ", 300)
      helpers.write(path, garbage)
      local db = assert(sqlite.open(path))   -- SQLite reads the file at its first use
      local st, message, kind = db:prepare("SELECT name FROM sqlite_master")
      assert.is_nil(st)
      assert.equal("file is not a database", message)
      assert.equal("corrupt", kind)
      local ok
      ok, message, kind = db:exec("CREATE TABLE t (x)")
      assert.is_nil(ok)
      assert.equal("file is not a database", message)
      assert.equal("corrupt", kind)
      db:close()
      assert.equal(garbage, helpers.read(path))
    end)

    it("gives kind 'busy' when another connection holds the write lock (busy_timeout = 0)", function()
      local path = dir .. "/busy.db"
      local a = assert(sqlite.open(path))
      assert.is_true(a:exec("CREATE TABLE t (x)"))
      local b = assert(sqlite.open(path, { busy_timeout = 0 }))
      assert.is_true(a:exec("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)"))
      local ok, message, kind = b:exec("INSERT INTO t VALUES (2)")
      assert.is_nil(ok)
      assert.equal("database is locked", message)
      assert.equal("busy", kind)
      assert.is_true(a:exec("COMMIT"))
      assert.is_true(b:exec("INSERT INTO t VALUES (2)"))
      assert.same({ { 1 }, { 2 } }, rows(a, "SELECT x FROM t ORDER BY x"))
      a:close()
      b:close()
    end)
  end)

  describe("exec", function()
    it("runs several statements, in order", function()
      local db = assert(sqlite.open(dir .. "/x.db"))
      assert.is_true(db:exec([[
        CREATE TABLE t (k INTEGER PRIMARY KEY, v);
        INSERT INTO t VALUES (1, 10);
        INSERT INTO t VALUES (2, 20);
        UPDATE t SET v = v + 1 WHERE k = 2;
        CREATE TABLE u (x);
      ]]))
      assert.same({ { 1, 10 }, { 2, 21 } }, rows(db, "SELECT k, v FROM t ORDER BY k"))
      assert.same({}, rows(db, "SELECT x FROM u"))
      db:close()
    end)

    it("stops at the first failing statement: nil, message, kind; those before it stay done", function()
      local db = assert(sqlite.open(dir .. "/x.db"))
      local ok, message, kind = db:exec("CREATE TABLE t (x); INSERT INTO nope VALUES (1); CREATE TABLE u (y)")
      assert.is_nil(ok)
      assert.equal("no such table: nope", message)
      assert.equal("error", kind)
      assert.same({ { "t" } }, rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'"))
      db:close()
    end)
  end)

  describe("prepare", function()
    it("returns nil, a message naming the problem and kind 'error' for bad SQL", function()
      local db = assert(sqlite.open(dir .. "/x.db"))
      local st, message, kind = db:prepare("SELEC 1")
      assert.is_nil(st)
      assert.equal('near "SELEC": syntax error', message)
      assert.equal("error", kind)
      st, message, kind = db:prepare("SELECT x FROM missing_table")
      assert.is_nil(st)
      assert.equal("no such table: missing_table", message)
      assert.equal("error", kind)
      -- the connection goes on
      assert.same({ { 1 } }, rows(db, "SELECT 1"))
      db:close()
    end)

    it("raises when there is no statement in the text", function()
      local db = assert(sqlite.open(dir .. "/x.db"))
      assert.truthy(raised(function() return db:prepare("  -- nothing\n") end):find("no SQL statement", 1, true))
      db:close()
    end)
  end)

  describe("run", function()
    local db
    before_each(function()
      db = assert(sqlite.open(dir .. "/values.db"))
      assert.is_true(db:exec("CREATE TABLE v (k INTEGER PRIMARY KEY, x, b BLOB, t TEXT)"))
    end)
    after_each(function() db:close() end)

    it("binds nil, booleans, integers, floats and strings, and reads them back as they were", function()
      local ins = assert(db:prepare("INSERT INTO v (k, x) VALUES (?, ?)"))
      local values = {
        { 1, nil, "null" }, { 2, true, "integer" }, { 3, false, "integer" },
        { 4, 42, "integer" }, { 5, math.maxinteger, "integer" }, { 6, math.mininteger, "integer" },
        { 7, 1.5, "real" }, { 8, -0.1, "real" }, { 9, 2.0^70, "real" },
        { 10, "hello", "blob" }, { 11, "", "blob" },
      }
      for _, v in ipairs(values) do assert.equal(1, ins:run(v[1], v[2])) end
      ins:close()
      local got = rows(db, "SELECT k, x, typeof(x) FROM v ORDER BY k")
      assert.equal(#values, #got)
      for i, v in ipairs(values) do
        local expected = v[2]
        if expected == true then expected = 1 elseif expected == false then expected = 0 end
        assert.equal(v[1], got[i][1])
        assert.equal(expected, got[i][2])
        assert.equal(math.type(expected), math.type(got[i][2]))   -- 1.5 stays a float, 42 an integer
        assert.equal(v[3], got[i][3])
      end
    end)

    it("round-trips a binary string with NUL bytes through a BLOB column, byte for byte", function()
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      local all = table.concat(bytes)
      local binary = "\0" .. all .. "\0\0middle\0" .. all:reverse() .. "\0"
      local large = string.rep("\0\1\255\0 a\0", 100000)   -- 700 kB, more than a page
      local ins = assert(db:prepare("INSERT INTO v (k, b) VALUES (?, ?)"))
      assert.equal(1, ins:run(1, binary))
      assert.equal(1, ins:run(2, large))
      ins:close()
      local got = rows(db, "SELECT b, length(b), typeof(b) FROM v ORDER BY k")
      assert.equal(binary, got[1][1])
      assert.equal(#binary, got[1][2])
      assert.equal("blob", got[1][3])
      assert.equal(large, got[2][1])
      assert.equal(#large, got[2][2])
      -- a parameter matches the BLOB it was stored as
      assert.same({ { 1 } }, rows(db, "SELECT k FROM v WHERE b = ?", binary))
    end)

    it("returns the rows it changed", function()
      local ins = assert(db:prepare("INSERT INTO v (k, x) VALUES (?, ?)"))
      for k, x in ipairs { "a", "a", "b" } do assert.equal(1, ins:run(k, x)) end
      ins:close()
      local upd = assert(db:prepare("UPDATE v SET x = ? WHERE x = ?"))
      assert.equal(2, upd:run("c", "a"))
      assert.equal(2, db:changes())
      assert.equal(0, upd:run("c", "zzz"))
      assert.equal(0, db:changes())
      upd:close()
      -- a string parameter is a BLOB, which no TEXT literal equals
      assert.same({ { 3 } }, rows(db, "SELECT k FROM v WHERE x = ?", "b"))
      assert.same({}, rows(db, "SELECT k FROM v WHERE x = 'b'"))
      local sel = assert(db:prepare("SELECT 1"))
      assert.equal(0, sel:run())
      sel:close()
    end)

    it("gives kind 'constraint' on a violated constraint; the statement runs again afterwards", function()
      local ins = assert(db:prepare("INSERT INTO v (k, x) VALUES (?, ?)"))
      assert.equal(1, ins:run(1, "first"))
      local ok, message, kind = ins:run(1, "again")
      assert.is_nil(ok)
      assert.equal("UNIQUE constraint failed: v.k", message)
      assert.equal("constraint", kind)
      assert.equal(1, ins:run(2, "second"))
      ins:close()
      assert.same({ { 1, "first" }, { 2, "second" } }, rows(db, "SELECT k, x FROM v ORDER BY k"))
    end)

    it("raises on the wrong number of values, and on a value that cannot be bound", function()
      local ins = assert(db:prepare("INSERT INTO v (k, x) VALUES (?, ?)"))
      assert.equal("forage.sqlite: the statement takes 2 values, got 1", raised(function() return ins:run(1) end))
      assert.equal("forage.sqlite: the statement takes 2 values, got 3", raised(function() return ins:run(1, 2, 3) end))
      assert.equal("forage.sqlite: the statement takes 2 values, got 0", raised(function() return ins:run() end))
      local err = raised(function() return ins:run(1, {}) end)
      assert.truthy(err:find("bad argument #2 to 'run' (nil, boolean, number or string expected, got table)", 1, true),
        err)
      -- nothing was written, and the statement still works
      assert.same({}, rows(db, "SELECT k FROM v"))
      assert.equal(1, ins:run(1, 2))
      ins:close()
      assert.same({ { 1, 2 } }, rows(db, "SELECT k, x FROM v"))
    end)
  end)

  describe("each", function()
    local db
    before_each(function()
      db = assert(sqlite.open(dir .. "/each.db"))
      assert.is_true(db:exec([[CREATE TABLE t (k INTEGER PRIMARY KEY, v);
        INSERT INTO t VALUES (3, 'c'); INSERT INTO t VALUES (1, 'a'); INSERT INTO t VALUES (2, 'b');
        CREATE TABLE other (x)]]))
    end)
    after_each(function() db:close() end)

    it("calls the function with each row's columns, in the query's order, with values bound", function()
      local st = assert(db:prepare("SELECT k, v FROM t WHERE k >= ? ORDER BY k"))
      local got = {}
      assert.is_true(st:each(function(k, v) got[#got + 1] = k .. v end, 1))
      assert.same({ "1a", "2b", "3c" }, got)
      got = {}
      assert.is_true(st:each(function(k, v) got[#got + 1] = k .. v end, 2))
      assert.same({ "2b", "3c" }, got)
      got = {}
      assert.is_true(st:each(function(k, v) got[#got + 1] = k .. v end, 9))
      assert.same({}, got)
      assert.equal("forage.sqlite: the statement takes 1 values, got 0", raised(function() return st:each(print) end))
      st:close()
    end)

    it("lets an error of the callback go on up; the statement is reset and runs again from the start", function()
      local st = assert(db:prepare("SELECT k, v FROM t ORDER BY k"))
      -- While the statement is stepping, the table is locked (control of the check below).
      local during
      assert.is_true(st:each(function(k)
        if k == 1 then during = table.pack(db:exec("DROP TABLE other")) end
      end))
      assert.same({ nil, "database table is locked", "busy", n = 3 }, during)
      local calls = 0
      local ok, err = pcall(st.each, st, function(k)
        calls = calls + 1
        error({ at = k })
      end)
      assert.is_false(ok)
      assert.same({ at = 1 }, err)   -- the very error object, not a copy or a message
      assert.equal(1, calls)
      ok, err = pcall(st.each, st, function(k) if k == 2 then error("stop at 2") end end)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("stop at 2", 1, true))
      -- Reset: the next run starts at the first row, not where the error left it.
      local got = {}
      assert.is_true(st:each(function(k, v) got[#got + 1] = k .. v end))
      assert.same({ "1a", "2b", "3c" }, got)
      -- and it holds no lock: the table can be dropped now
      assert.is_true(db:exec("DROP TABLE other"))
      st:close()
    end)

    it("raises when the callback is not a function", function()
      local st = assert(db:prepare("SELECT k FROM t"))
      assert.truthy(raised(function() return st:each("no") end):find("function expected", 1, true))
      st:close()
    end)
  end)

  describe("transactions", function()
    it("in_transaction tells BEGIN ... COMMIT and ROLLBACK apart from autocommit", function()
      local db = assert(sqlite.open(dir .. "/tx.db"))
      assert.is_true(db:exec("CREATE TABLE t (x)"))
      assert.is_false(db:in_transaction())
      assert.is_true(db:exec("BEGIN"))
      assert.is_true(db:in_transaction())
      assert.is_true(db:exec("INSERT INTO t VALUES (1)"))
      assert.is_true(db:exec("ROLLBACK"))
      assert.is_false(db:in_transaction())
      assert.same({}, rows(db, "SELECT x FROM t"))
      assert.is_true(db:exec("BEGIN; INSERT INTO t VALUES (2)"))
      assert.is_true(db:in_transaction())
      assert.is_true(db:exec("COMMIT"))
      assert.is_false(db:in_transaction())
      assert.same({ { 2 } }, rows(db, "SELECT x FROM t"))
      db:close()
    end)

    it("rolls back what was not committed when the connection closes", function()
      local path = dir .. "/tx.db"
      local db = assert(sqlite.open(path))
      assert.is_true(db:exec("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1)"))
      assert.is_true(db:exec("BEGIN; INSERT INTO t VALUES (2)"))
      db:close()
      db = assert(sqlite.open(path))
      assert.same({ { 1 } }, rows(db, "SELECT x FROM t"))
      db:close()
    end)
  end)

  describe("close", function()
    it("is idempotent, for connections and statements", function()
      local db = assert(sqlite.open(dir .. "/c.db"))
      local st = assert(db:prepare("SELECT 1"))
      st:close()
      st:close()
      assert.equal("forage.sqlite.Statement (closed)", tostring(st))
      db:close()
      db:close()
      do
        local scoped <close> = assert(sqlite.open(dir .. "/c.db"))
        local scoped_st <close> = assert(scoped:prepare("SELECT 1"))
        assert.equal("forage.sqlite.Statement (SELECT 1)", tostring(scoped_st))
      end
    end)

    it("makes every later use of a closed connection or statement raise", function()
      local db = assert(sqlite.open(dir .. "/c.db"))
      assert.is_true(db:exec("CREATE TABLE t (x)"))
      local st = assert(db:prepare("INSERT INTO t VALUES (?)"))
      st:close()
      local closed_st = "attempt to use a closed forage.sqlite.Statement"
      assert.equal(closed_st, raised(function() return st:run(1) end))
      assert.equal(closed_st, raised(function() return st:each(print, 1) end))
      db:close()
      local closed_db = "attempt to use a closed forage.sqlite.Database"
      assert.equal(closed_db, raised(function() return db:exec("SELECT 1") end))
      assert.equal(closed_db, raised(function() return db:prepare("SELECT 1") end))
      assert.equal(closed_db, raised(function() return db:in_transaction() end))
      assert.equal(closed_db, raised(function() return db:changes() end))
    end)

    it("finalizes the connection's statements: the file is really closed and its WAL checkpointed away", function()
      local path = dir .. "/wal.db"
      local db = assert(sqlite.open(path))
      assert.is_true(db:exec("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1)"))
      local ins = assert(db:prepare("INSERT INTO t VALUES (?)"))
      local sel = assert(db:prepare("SELECT x FROM t"))
      assert.equal(1, ins:run(2))
      assert.is_true(exists(path .. "-wal"))
      assert.is_true(has_open(path))
      -- The statements are left open: a connection closed with live statements would stay
      -- open (sqlite3_close_v2 waits for them), keeping the file and its WAL.
      db:close()
      assert.equal("attempt to use a closed forage.sqlite.Statement", raised(function() return ins:run(3) end))
      assert.equal("attempt to use a closed forage.sqlite.Statement", raised(function() return sel:each(print) end))
      assert.equal("forage.sqlite.Statement (closed)", tostring(ins))
      ins:close()   -- still allowed, and still nothing to do
      assert.is_false(has_open(path))
      assert.is_false(exists(path .. "-wal"))
      db = assert(sqlite.open(path))
      assert.same({ { 1 }, { 2 } }, rows(db, "SELECT x FROM t ORDER BY x"))
      db:close()
    end)

    it("keeps the connection alive while a statement of it lives", function()
      local path = dir .. "/alive.db"
      local function prepared()   -- the connection's only reference is its statement's
        local db = assert(sqlite.open(path))
        assert.is_true(db:exec("CREATE TABLE t (x); INSERT INTO t VALUES (5)"))
        return assert(db:prepare("SELECT x FROM t"))
      end
      local st = prepared()
      collectgarbage()
      collectgarbage()
      local got
      assert.is_true(st:each(function(x) got = x end))
      assert.equal(5, got)
      st:close()
    end)
  end)

  describe("after fork", function()
    -- Opens a WAL database with a table t holding 1 and 2; returns a table holding the
    -- connection and a prepared insert (kept out of the test's own locals, so that a child
    -- can drop every reference to them and collect them).
    local function open_into(path)
      local holder = {}
      holder.db = assert(sqlite.open(path))
      assert.is_true(holder.db:exec("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY)"))
      holder.insert = assert(holder.db:prepare("INSERT INTO t VALUES (?)"))
      assert.equal(1, holder.insert:run(1))
      assert.equal(1, holder.insert:run(2))
      return holder
    end

    it("a child calling a method gets an error naming the process that opened the connection", function()
      local holder = open_into(dir .. "/fork.db")
      local r, w = forage.pipe(false)
      local p = reaped(forage.process(function()
        local report = {}
        local function try(name, fn, ...)
          local ok, err = pcall(fn, ...)
          report[name] = ok and "no error" or tostring(err)
        end
        local db, insert = holder.db, holder.insert
        try("exec", db.exec, db, "INSERT INTO t VALUES (99)")
        try("prepare", db.prepare, db, "SELECT n FROM t")
        try("in_transaction", db.in_transaction, db)
        try("run", insert.run, insert, 98)
        try("each", insert.each, insert, print, 97)
        w:send(report)
      end):start())
      local report = assert(r:recv(WAIT))
      assert.equal(0, helpers.join_or_fail(p, WAIT))
      local expected = "forage.sqlite: this connection was opened by process " .. forage.getpid()
        .. " and cannot be used in another"
      for _, name in ipairs { "exec", "prepare", "in_transaction", "run", "each" } do
        assert.truthy(report[name]:find(expected, 1, true), name .. ": " .. report[name])
      end
      -- nothing the child tried reached the file
      assert.same({ { 1 }, { 2 } }, rows(holder.db, "SELECT n FROM t ORDER BY n"))
      holder.insert:close()
      holder.db:close()
    end)

    it("a child that collects its copy leaves the parent's connection and WAL alone", function()
      local path = dir .. "/fork.db"
      local holder = open_into(path)
      assert.is_true(exists(path .. "-wal"))
      local r, w = forage.pipe(false)
      local p = reaped(forage.process(function()
        local weak = setmetatable({}, { __mode = "v" })
        weak.db, weak.insert = holder.db, holder.insert
        holder.db, holder.insert = nil, nil
        collectgarbage()
        collectgarbage()
        w:send({ collected = weak.db == nil and weak.insert == nil })
      end):start())
      local report = assert(r:recv(WAIT))
      assert.equal(0, helpers.join_or_fail(p, WAIT))
      assert.is_true(report.collected, "the child's copies were not collected: the check proves nothing")
      -- The parent's connection goes on: writes land and everything reads back.
      assert.is_true(exists(path .. "-wal"))
      assert.is_true(has_open(path))
      assert.equal(1, holder.insert:run(3))
      assert.is_true(holder.db:exec("INSERT INTO t VALUES (4)"))
      assert.same({ { 1 }, { 2 }, { 3 }, { 4 } }, rows(holder.db, "SELECT n FROM t ORDER BY n"))
      assert.is_true(exists(path .. "-wal"))
      -- and a second connection (another process's view) sees the same
      local other = assert(sqlite.open(path, { readonly = true }))
      assert.same({ { 1 }, { 2 }, { 3 }, { 4 } }, rows(other, "SELECT n FROM t ORDER BY n"))
      other:close()
      holder.insert:close()
      holder.db:close()
      local db = assert(sqlite.open(path))
      assert.same({ { 1 }, { 2 }, { 3 }, { 4 } }, rows(db, "SELECT n FROM t ORDER BY n"))
      assert.same({ { "ok" } }, rows(db, "PRAGMA integrity_check"))
      db:close()
    end)

    -- The crawl's case: its workers are forked while the state's transaction is open. Had
    -- the child's collection closed its copy, SQLite would roll that transaction back there,
    -- and a rollback in WAL mode clears the wal-index hash entries of the uncommitted frames
    -- in the -shm mapping the two processes share: the parent would then read stale pages
    -- ("database disk image is malformed").
    it("a child that collects its copy during the parent's write transaction leaves the transaction whole", function()
      local path = dir .. "/spill.db"
      local function value(k) return string.rep(string.char(k % 256), 1000) .. k end
      local holder = {}
      local function open_in_transaction()
        holder.db = assert(sqlite.open(path))
        -- a cache of 10 pages: the transaction spills into the WAL as uncommitted frames
        assert.is_true(holder.db:exec([[PRAGMA journal_mode = WAL; PRAGMA cache_size = 10;
          CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB); CREATE INDEX t_v ON t (v)]]))
        holder.insert = assert(holder.db:prepare("INSERT INTO t VALUES (?, ?)"))
        assert.is_true(holder.db:exec("BEGIN"))
        for k = 1, 300 do assert.equal(1, holder.insert:run(k, value(k))) end
      end
      open_in_transaction()
      local wal = assert(io.open(path .. "-wal", "rb"))
      assert.is_true(wal:seek("end") > 100000, "the transaction did not spill into the WAL")
      wal:close()
      local r, w = forage.pipe(false)
      local p = reaped(forage.process(function()
        local weak = setmetatable({}, { __mode = "v" })
        weak.db, weak.insert = holder.db, holder.insert
        holder.db, holder.insert = nil, nil
        collectgarbage()
        collectgarbage()
        w:send({ collected = weak.db == nil and weak.insert == nil })
      end):start())
      local report = assert(r:recv(WAIT))
      assert.equal(0, helpers.join_or_fail(p, WAIT))
      assert.is_true(report.collected, "the child's copies were not collected: the check proves nothing")
      assert.is_true(holder.db:in_transaction())
      for k = 301, 400 do assert.equal(1, holder.insert:run(k, value(k))) end
      local wrong = {}
      local seen = 0
      local select = assert(holder.db:prepare("SELECT k, v FROM t ORDER BY k"))
      assert.is_true(select:each(function(k, v)
        seen = seen + 1
        if v ~= value(k) then wrong[#wrong + 1] = k end
      end))
      select:close()
      assert.equal(400, seen)
      assert.same({}, wrong)
      assert.is_true(holder.db:exec("COMMIT"))
      assert.same({ { "ok" } }, rows(holder.db, "PRAGMA integrity_check"))
      holder.insert:close()
      holder.db:close()
      local db = assert(sqlite.open(path))
      assert.same({ { 400, 400 * 401 // 2 } }, rows(db, "SELECT count(*), sum(k) FROM t"))
      db:close()
    end)

    it("a child's close of its copy is a no-op for the parent", function()
      local path = dir .. "/fork.db"
      local holder = open_into(path)
      local p = reaped(forage.process(function()
        holder.insert:close()
        holder.db:close()
      end):start())
      assert.equal(0, helpers.join_or_fail(p, WAIT))
      assert.equal(1, holder.insert:run(3))
      assert.same({ { 1 }, { 2 }, { 3 } }, rows(holder.db, "SELECT n FROM t ORDER BY n"))
      assert.is_true(exists(path .. "-wal"))
      holder.insert:close()
      holder.db:close()
    end)
  end)
end)
