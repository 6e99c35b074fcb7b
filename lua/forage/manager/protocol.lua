-- What a manager's client and server say to each other (docs/manager.md, "The protocol").
-- Every frame is a forage.Connection frame in the wire's data mode: nothing a peer sends
-- can be code, and the server checks the shape of every request before it looks at it.
--
-- Handshake (the server speaks first):
--   server -> { "forage-manager", VERSION, challenge }          32 random bytes
--   client -> { "hello", VERSION, hmac(authkey, challenge), client_challenge }
--   server -> { "welcome", hmac(authkey, client_challenge) }    the server knows the key too
--          or { "refused", message }                            and the connection closes
-- Requests and replies, one reply per request, in order:
--   client -> { object_id, method, n, arg1, ..., argn [, r = true] }
--             object 0 is the server itself; r says some argument holds proxies (REF tables);
--             other keys are ignored (looking for them would cost every call)
--   server -> { OK, n, result1, ..., resultn }
--          or { OK_REFS, n, ... }   some result holds REF tables, to turn into proxies
--          or { FAILED, message, traceback }
local core = require "forage.core"

local M = {}

M.VERSION = 1
M.GREETING = "forage-manager"
M.OK, M.OK_REFS, M.FAILED = 0, 1, 2
-- A managed object inside a value: { [REF] = id, t = type name }. The key starts with a
-- NUL byte, so no identifier-like key of a user's table is taken.
M.REF = "\0forage.ref"
M.MAX_ARGS = 250
M.MAX_METHOD = 64

-- A method name a client may ask for: an identifier not starting with '_'.
local function method_name_ok(s)
  return type(s) == "string" and #s <= M.MAX_METHOD and s:find("^[%a][%w_]*$") ~= nil
end
M.method_name_ok = method_name_ok

-- check_request(v) -> v, or nil, message. Never raises, whatever v is (the frame fuzzer
-- holds it to that: fuzz/frame_fuzz.c).
function M.check_request(v)
  if type(v) ~= "table" then return nil, "a request must be a table, got " .. type(v) end
  local id, method, n = rawget(v, 1), rawget(v, 2), rawget(v, 3)
  if math.type(id) ~= "integer" or id < 0 then return nil, "a request's object must be an id" end
  if type(method) ~= "string" then return nil, "a request's method must be a string" end
  if not method_name_ok(method) then
    if method:sub(1, 1) == "_" then return nil, "method names starting with '_' cannot be called" end
    return nil, "not a method name: " .. string.format("%q", method:sub(1, 60))
  end
  if math.type(n) ~= "integer" or n < 0 or n > M.MAX_ARGS then
    return nil, "a request's argument count must be an integer from 0 to " .. M.MAX_ARGS
  end
  local r = rawget(v, "r")
  if r ~= nil and r ~= true then return nil, "a request's 'r' must be true" end
  return v
end

-- The handshake's MACs: both sides prove they know the key; it never travels.
function M.challenge()
  return core.random_bytes(32)
end

function M.answer(authkey, challenge)
  return core.hmac_sha256(authkey, challenge)
end

function M.verify(authkey, challenge, mac)
  return type(mac) == "string" and core.secret_equal(mac, core.hmac_sha256(authkey, challenge))
end

-- Walks a freshly decoded v (tables, keys and values, each table once) and replaces each
-- table for which swap(t) returns something by that, in place. Returns the new v. Only for
-- values nobody else holds: a message just received.
function M.swap_in_place(v, swap)
  if type(v) ~= "table" then return v end
  local seen = {}
  local function walk(t)
    local s = swap(t)
    if s ~= nil then return s end
    if seen[t] then return t end
    seen[t] = true
    local changes
    for k, x in next, t do
      local k2 = type(k) == "table" and walk(k) or k
      local x2 = type(x) == "table" and walk(x) or x
      if k2 ~= k or x2 ~= x then
        changes = changes or {}
        changes[#changes + 1] = { k, k2, x2 }
      end
    end
    for _, c in ipairs(changes or {}) do
      if c[1] ~= c[2] then t[c[1]] = nil end
      t[c[2]] = c[3]
    end
    return t
  end
  return walk(v)
end

-- copy_swapping(v, swap) -> v itself when no table inside it is one swap(t) replaces;
-- else a deep copy (sharing and cycles kept, metatables left out, as the wire does) with
-- those tables replaced. For values someone holds: a caller's arguments, a server's data.
function M.copy_swapping(v, swap)
  if type(v) ~= "table" then return v end
  local seen, found = {}, false
  local function scan(t)
    if seen[t] or found then return end
    seen[t] = true
    if swap(t) ~= nil then
      found = true
      return
    end
    for k, x in next, t do
      if type(k) == "table" then scan(k) end
      if type(x) == "table" then scan(x) end
    end
  end
  scan(v)
  if not found then return v end
  local copies = {}
  local function copy(t)
    if copies[t] then return copies[t] end
    local s = swap(t)
    if s ~= nil then return s end
    local c = {}
    copies[t] = c
    for k, x in next, t do
      c[type(k) == "table" and copy(k) or k] = type(x) == "table" and copy(x) or x
    end
    return c
  end
  return copy(v)
end

return M
