-- Where a crawl's items go: JSON Lines (.jsonl, .ndjson, and .json, which is also one
-- JSON document a line) or CSV (.csv), "-" for JSON Lines on stdout; and whole JSON
-- documents written atomically (stats.json).
--
-- Strings are escaped by lua-cjson; this file only walks the tables, because cjson 2.1.0
-- neither sorts keys (output must be deterministic) nor refuses a table that mixes
-- integer and string keys (it would write {"1":..}). Each item is encoded whole before a
-- byte is written, and written with one write() on an unbuffered file, then flushed: a
-- reader tailing the file sees whole lines, and an item that cannot be encoded leaves
-- nothing behind.
local cjson = require "cjson"
local args = require "forage.args"
local forage = require "forage"

local M = {}

local MAX_DEPTH = 1000
local FORMATS = { jsonl = "jsonl", ndjson = "jsonl", json = "jsonl", csv = "csv" }

local function where(path)
  return path == "" and "the item" or path
end

-- A float as the shortest of %.14g..%.17g that reads back as the same number.
local function number_text(v)
  if math.type(v) == "integer" then return string.format("%d", v) end
  for digits = 14, 17 do
    local s = string.format("%." .. digits .. "g", v)
    if tonumber(s) == v then return s end
  end
  return string.format("%.17g", v)
end

-- "array" with its length for a table whose keys are exactly 1..n (an empty table is an
-- array), "object" for one whose keys are all strings, or nil and the key that is neither.
-- The metatable of tables that are JSON objects even when empty (output.object).
local OBJECT = {}

local function table_kind(t)
  if next(t) == nil and getmetatable(t) == OBJECT then return "object" end
  local n, strings, others, bad = 0, 0, 0, nil
  for k in pairs(t) do
    if type(k) == "string" then
      strings = strings + 1
    else
      others = others + 1
      if math.type(k) == "integer" and k >= 1 then
        if k > n then n = k end
      else
        bad = k
      end
    end
  end
  if strings == 0 and not bad and n == others then return "array", n end
  if others == 0 then return "object" end
  if bad == nil then
    for k in pairs(t) do if type(k) ~= "string" then bad = k break end end
  end
  return nil, bad
end

local encode_value

-- A JSON string: cjson's, without its escaping of "/" (URLs read as URLs). Escapes are
-- read in pairs, so an escaped backslash before a slash stays as it is.
local function json_string(s)
  local text = cjson.encode(s)
  if not text:find("\\/", 1, true) then return text end
  return (text:gsub("\\(.)", function(c) return c == "/" and "/" or "\\" .. c end))
end

local function encode_table(t, path, depth, active, indent, out)
  if active[t] then return nil, "a cycle at " .. where(path) end
  if depth > MAX_DEPTH then return nil, "tables nested deeper than " .. MAX_DEPTH .. " at " .. where(path) end
  local kind, n = table_kind(t)
  if not kind then
    return nil, string.format("a table mixing the key %s with string keys or list positions at %s",
      args.show(n), where(path))
  end
  active[t] = true
  local nl, pad, pad_in, colon = "", "", "", ":"
  if indent then
    nl, pad, pad_in, colon = "\n", string.rep(indent, depth - 1), string.rep(indent, depth), ": "
  end
  if kind == "array" then
    if n == 0 then out[#out + 1] = "[]" else
      out[#out + 1] = "[" .. nl
      for i = 1, n do
        out[#out + 1] = pad_in
        local ok, message = encode_value(t[i], path .. "[" .. i .. "]", depth + 1, active, indent, out)
        if not ok then return nil, message end
        out[#out + 1] = (i < n and "," or "") .. nl
      end
      out[#out + 1] = pad .. "]"
    end
  else
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    out[#out + 1] = "{" .. nl
    for i, k in ipairs(keys) do
      if not utf8.len(k) then return nil, "a key that is not UTF-8 at " .. where(path) end
      out[#out + 1] = pad_in .. json_string(k) .. colon
      local ok, message = encode_value(t[k], path .. "." .. k, depth + 1, active, indent, out)
      if not ok then return nil, message end
      out[#out + 1] = (i < #keys and "," or "") .. nl
    end
    out[#out + 1] = pad .. "}"
  end
  active[t] = nil
  return true
end

function encode_value(v, path, depth, active, indent, out)
  local t = type(v)
  if t == "string" then
    if not utf8.len(v) then return nil, "a string that is not UTF-8 at " .. where(path) end
    out[#out + 1] = json_string(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      return nil, string.format("the number %s at %s (JSON has no NaN or infinity)", tostring(v), where(path))
    end
    out[#out + 1] = number_text(v)
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif v == nil or v == cjson.null then
    out[#out + 1] = "null"
  elseif t == "table" then
    return encode_table(v, path, depth, active, indent, out)
  else
    return nil, string.format("a %s at %s", t, where(path))
  end
  return true
end

-- output.object([t]) -> t (or a new table), marked as a JSON object: `{}` when empty, not
-- `[]` (an empty table is a list otherwise).
function M.object(t)
  return setmetatable(t or {}, OBJECT)
end

-- encode(value [, indent]) -> JSON text, or nil and what in the value JSON cannot hold
-- (a function, a userdata, a cycle, a mixed table, NaN, infinity, bytes that are not
-- UTF-8). Keys sorted; an empty table is [].
function M.encode(value, indent)
  local out = {}
  local ok, message = encode_value(value, "", 1, {}, indent, out)
  if not ok then return nil, "cannot write " .. message end
  return table.concat(out)
end

-- RFC 4180: a field with a comma, a quote or a line break is quoted, quotes doubled.
local function csv_field(s)
  if s:find('[,"\r\n]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end

local function csv_text(v, path)
  local t = type(v)
  if v == nil or v == cjson.null then return "" end
  if t == "string" then return v end
  if t == "number" or t == "boolean" then
    local out = {}
    local ok, message = encode_value(v, path, 1, {}, nil, out)
    if not ok then return nil, "cannot write " .. message end
    return out[1]
  end
  if t == "table" then
    local kind, n = table_kind(v)
    if kind == "array" then
      local parts = {}
      for i = 1, n do
        local item = v[i]
        local s, message
        if type(item) == "table" then s, message = M.encode(item) else s, message = csv_text(item, path) end
        if not s then return nil, message end
        parts[i] = s:gsub("[\\|]", "\\%0")   -- a "|" or "\" inside an element is escaped with "\"
      end
      return table.concat(parts, "|")
    end
    return M.encode(v)
  end
  return nil, string.format("cannot write a %s at %s", t, path)
end

-- Reads a CSV header line into its column names (for append).
local function parse_header(line)
  local columns, i = {}, 1
  line = line:gsub("\r$", "")
  while i <= #line + 1 do
    if line:sub(i, i) == '"' then
      local value, j = {}, i + 1
      while true do
        local q = line:find('"', j, true)
        if not q then return nil end
        value[#value + 1] = line:sub(j, q - 1)
        if line:sub(q + 1, q + 1) == '"' then
          value[#value + 1] = '"'
          j = q + 2
        else
          i = q + 1
          break
        end
      end
      columns[#columns + 1] = table.concat(value)
      i = i + 1   -- past the comma
    else
      local comma = line:find(",", i, true) or #line + 1
      columns[#columns + 1] = line:sub(i, comma - 1)
      i = comma + 1
    end
  end
  return columns
end

local Writer = {}
Writer.__index = Writer

local function check_open(self)
  if self.closed then error("attempt to use a closed forage.crawl.output writer", 3) end
end

local function put_line(self, line)
  local ok, message = self.file:write(line)
  if ok then ok, message = self.file:flush() end
  if not ok then return nil, message, "io" end
  self.count = self.count + 1
  return true
end

-- w:write(item) -> true, or nil, message, kind ("value": the item cannot be written, and
-- nothing of it was; "io": the file refused it).
function Writer:write(item)
  check_open(self)
  if type(item) ~= "table" then return nil, "an item must be a table, got " .. type(item), "value" end
  if self.format == "jsonl" then
    local line, message = M.encode(item)
    if not line then return nil, message, "value" end
    return put_line(self, line .. "\n")
  end
  local kind = table_kind(item)
  if kind ~= "object" and next(item) ~= nil then
    return nil, "a CSV item must have string keys only", "value"
  end
  local header
  if not self.columns then
    if next(item) == nil then return nil, "the first CSV item has no keys to make columns from", "value" end
    local columns = {}
    for k in pairs(item) do columns[#columns + 1] = k end
    table.sort(columns)
    local names = {}
    for i, k in ipairs(columns) do names[i] = csv_field(k) end
    header, self.pending_columns = table.concat(names, ",") .. "\r\n", columns
  end
  local columns = self.columns or self.pending_columns
  local fields, known = {}, {}
  for i, k in ipairs(columns) do
    known[k] = true
    local s, message = csv_text(item[k], k)
    if not s then return nil, message, "value" end
    fields[i] = csv_field(s)
  end
  local dropped = 0
  for k in pairs(item) do if not known[k] then dropped = dropped + 1 end end
  local line = table.concat(fields, ",") .. "\r\n"
  if header then
    -- the header goes out with the first row, in one write: never a header alone
    local ok, message, why = put_line(self, header .. line)
    if not ok then return nil, message, why end
    self.columns, self.pending_columns = columns, nil
    return true
  end
  local ok, message, why = put_line(self, line)
  if not ok then return nil, message, why end
  self.dropped_keys = self.dropped_keys + dropped
  return true
end

-- w:close() -> true; a second close does nothing. "-" flushes stdout and leaves it open.
function Writer:close()
  if self.closed then return true end
  self.closed = true
  if self.file == io.stdout then
    self.file:flush()
    return true
  end
  return self.file:close()
end
Writer.__close = Writer.close

local function format_of(path, fname)
  if path == "-" then return "jsonl" end
  local ext = path:match("%.([^./]+)$")
  local format = ext and FORMATS[ext:lower()]
  if not format then
    error(string.format("%s: unknown output format %s for %s (known: .jsonl, .ndjson, .json (JSON Lines), .csv, "
      .. "or '-' for stdout)", fname, ext and args.show("." .. ext) or "(no extension)", args.show(path)), 3)
  end
  return format
end

-- open(path [, { append = false }]) -> writer, or nil, message, "io" when the file cannot
-- be opened. Raises on an extension it does not know.
function M.open(path, opts)
  args.check(1, path, "string", "open")
  opts = args.options("forage.crawl.output.open", opts, { append = true })
  if opts.append ~= nil and type(opts.append) ~= "boolean" then
    args.bad_option("forage.crawl.output.open", "append", "a boolean", opts.append)
  end
  local format = format_of(path, "forage.crawl.output.open")
  local self = setmetatable({ path = path, format = format, count = 0, dropped_keys = 0 }, Writer)
  if path == "-" then
    self.file = io.stdout
    return self
  end
  if opts.append and format == "csv" then
    -- appending to a CSV keeps its columns and writes no second header
    local f = io.open(path, "rb")
    if f then
      local first = f:read("L")
      f:close()
      if first and first:sub(-1) == "\n" then self.columns = parse_header(first:gsub("\r?\n$", "")) end
    end
  end
  local file, message = io.open(path, opts.append and "ab" or "wb")
  if not file then return nil, message, "io" end
  file:setvbuf("no")   -- one write() a line
  self.file = file
  return self
end

-- failed_path(path) -> where the failed requests of that output go: "items.jsonl" and
-- "items.csv" give "items.failed.jsonl"; "-" gives nil.
function M.failed_path(path)
  args.check(1, path, "string", "failed_path")
  if path == "-" then return nil end
  format_of(path, "forage.crawl.output.failed_path")
  return path:gsub("%.[^./]+$", "") .. ".failed.jsonl"
end

-- write_json(path, value) -> true, or nil, message, kind ("value" or "io"): one JSON
-- document, keys sorted, indented by two spaces, written to a temporary file beside path
-- and renamed over it, so a reader sees the old document or the new one, whole.
function M.write_json(path, value)
  args.check(1, path, "string", "write_json")
  local text, message = M.encode(value, "  ")
  if not text then return nil, message, "value" end
  return M.write_atomic(path, text .. "\n")
end

-- write_atomic(path, bytes) -> true, or nil, message, "io": a reader sees the old file or
-- the whole new one (written to path.tmp.PID, then renamed over path), never a part.
function M.write_atomic(path, bytes)
  local tmp = string.format("%s.tmp.%d", path, forage.getpid())
  local f, message = io.open(tmp, "wb")
  if not f then return nil, message, "io" end
  local ok
  ok, message = f:write(bytes)
  if ok then ok, message = f:close() else f:close() end
  if ok then ok, message = os.rename(tmp, path) end
  if not ok then
    os.remove(tmp)
    return nil, message, "io"
  end
  return true
end

return M
