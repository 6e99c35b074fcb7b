-- The one rule for arguments and options (docs/conventions.md), for forage's Lua modules;
-- src/args.c is the same rule for the C bindings.
--
-- `level` is error()'s level as seen from the function that calls the helper (2, the
-- default, blames that function's caller); the helpers add their own frame.
local M = {}

local FOREVER = 1e9

-- A printable copy of v for a message, at most 60 bytes of a string.
function M.show(v)
  if type(v) == "string" then
    local s = v:sub(1, 60):gsub("[^\32-\126]", function(c) return string.format("\\x%02x", c:byte()) end)
    return "'" .. s .. (#v > 60 and "...'" or "'")
  elseif v ~= v then
    return "nan"   -- as src/args.c says it, whatever printf would
  elseif type(v) == "number" or type(v) == "boolean" or v == nil then
    return tostring(v)
  end
  return type(v)
end

-- Raises "bad argument #n to 'fname' (T expected, got U)" unless type(v) is one of the
-- types in `expected` ("string" or "string|table"); nil passes when optional.
function M.check(n, v, expected, fname, level, optional)
  if v == nil and optional then return v end
  local t = type(v)
  for want in expected:gmatch("[^|]+") do
    if t == want then return v end
  end
  error(string.format("bad argument #%d to '%s' (%s expected, got %s)", n, fname, expected:gsub("|", " or "),
    v == nil and "no value" or t), (level or 2) + 1)
end

-- Raises "<fname>: unknown option 'k' (known: a, b)" when opts has a key not in known
-- (a set: { name = true }).
function M.options(fname, opts, known, level)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(string.format("%s: options must be a table, got %s", fname, type(opts)), (level or 2) + 1)
  end
  for k in pairs(opts) do
    if type(k) ~= "string" or not known[k] then
      local names = {}
      for name in pairs(known) do names[#names + 1] = name end
      table.sort(names)
      error(string.format("%s: unknown option %s (known: %s)", fname, M.show(k), table.concat(names, ", ")),
        (level or 2) + 1)
    end
  end
  return opts
end

-- Raises "<fname>: option 'key' must be <what>, got <v>".
function M.bad_option(fname, key, what, v, level)
  error(string.format("%s: option '%s' must be %s, got %s", fname, key, what, M.show(v)), (level or 2) + 1)
end

-- A timeout: nil for forever (nil, math.huge, over 1e9 s), else seconds >= 0; raises on
-- a negative number, NaN or another type. `what` names it in the message.
function M.timeout(v, what, level)
  if v == nil then return nil end
  if type(v) ~= "number" or v ~= v or v < 0 then
    error(string.format("%s must be nil or a non-negative number of seconds, got %s", what, M.show(v)),
      (level or 2) + 1)
  end
  if v > FOREVER then return nil end
  return v
end

return M
