-- forage.css: CSS selectors compiled to XPath 1.0 for libxml2, in the manner of Scrapy's
-- parsel/cssselect. compile(selector) -> xpath, or raises "css: invalid selector '...'".
-- Supported: tag, *, .class, #id, [a] [a=v] [a~=v] [a^=v] [a$=v] [a*=v] [a|=v],
-- descendant ( ), child (>), adjacent (+), sibling (~), :first-child, :last-child,
-- :nth-child(an+b | odd | even), comma groups, and the pseudo-elements ::text and
-- ::attr(name). Each selector is relative: it matches the context node and its
-- descendants (descendant-or-self::), as in Scrapy.
--
-- Two translations. From a document, a chain of compounds is matched right to left, as
-- browsers do: "div a" is descendant-or-self::a[ancestor::div], one walk of the page with
-- a walk up from each candidate. The left-to-right form, descendant-or-self::div/descendant::a,
-- is quadratic in libxml2, which merges the result of every div into the set so far with a
-- duplicate check against all of it (10 s for 80,000 rows). From a node (compile(s, true)),
-- the leftmost compound must lie inside the node: in a chain of descendant and child
-- combinators it is an ancestor of the element matched, so it lies inside when it is at
-- least as deep as the node, which the caller gives as the variable $forage_depth (the
-- node's number of ancestors). A chain with a sibling combinator can leave the node's
-- subtree sideways: from a node it keeps the left-to-right form, its cost bounded by the
-- node's subtree.

local args = require "forage.args"

local M = {}

local caches, cached = { [false] = {}, [true] = {} }, 0
local CACHE_MAX = 1024
local NTH_MAX = 2 ^ 31   -- an+b beyond this matches nothing a page holds; refused as a typo

-- An XPath string literal for s (XPath 1.0 has no escapes: concat() when both quotes occur).
local function literal(s)
  if not s:find("'", 1, true) then return "'" .. s .. "'" end
  if not s:find('"', 1, true) then return '"' .. s .. '"' end
  local parts = {}
  for piece, quote in s:gmatch("([^']*)('?)") do
    if piece ~= "" then parts[#parts + 1] = "'" .. piece .. "'" end
    if quote ~= "" then parts[#parts + 1] = [["'"]] end
  end
  return "concat(" .. table.concat(parts, ", ") .. ")"
end

-- A parser over one selector string; fail() raises quoting the whole selector.
local function parser(selector)
  local pos = 1
  local p = {}

  function p.fail(why)
    error(("css: invalid selector %s (%s at %d)"):format(args.show(selector), why, pos), 0)
  end

  function p.peek(pattern) return selector:match("^" .. pattern, pos) end

  function p.take(pattern)
    local s, e = selector:find("^" .. pattern, pos)
    if not s then return nil end
    pos = e + 1
    return selector:sub(s, e)
  end

  function p.space() return p.take("%s+") end

  function p.done() return pos > #selector end

  -- An identifier: letters, digits, -, _, non-ASCII bytes, and backslash escapes.
  function p.ident()
    local out = {}
    while true do
      local plain = p.take("[%w_%-\128-\255]+")
      if plain then
        out[#out + 1] = plain
      elseif p.take("\\") then
        local hex = p.take("%x%x?%x?%x?%x?%x?")
        if hex then
          out[#out + 1] = utf8.char(tonumber(hex, 16))
          p.take("%s?")
        else
          local c = p.take(".")
          if not c then p.fail("dangling escape") end
          out[#out + 1] = c
        end
      else
        break
      end
    end
    if #out == 0 then return nil end
    local name = table.concat(out)
    if name:match("^%d") or name:match("^%-%d") then p.fail("bad identifier") end
    return name
  end

  -- A quoted string ('...' or "...") with backslash escapes, or nil.
  function p.quoted()
    local q = p.take("['\"]")
    if not q then return nil end
    local out = {}
    while true do
      local c = p.take(".")
      if not c then p.fail("unterminated string") end
      if c == q then break end
      if c == "\\" then
        c = p.take(".")
        if not c then p.fail("unterminated string") end
      end
      out[#out + 1] = c
    end
    return table.concat(out)
  end

  return p
end

-- The predicate for :nth-child(a*n + b): position p = a*k + b for some k >= 0.
local function nth_predicate(a, b)
  local position = "(count(preceding-sibling::*) + 1)"
  if a == 0 then return ("[%s = %d]"):format(position, b) end
  if a > 0 then
    return ("[%s >= %d and (%s - %d) mod %d = 0]"):format(position, b, position, b, a)
  end
  return ("[%s <= %d and (%d - %s) mod %d = 0]"):format(position, b, b, position, -a)
end

-- Parses the argument of :nth-child into a, b.
local function nth_arguments(p, text)
  local s = text:gsub("%s+", ""):lower()
  if s == "odd" then return 2, 1 end
  if s == "even" then return 2, 0 end
  if s:match("^[+-]?%d+$") then
    local b = math.tointeger(tonumber(s))
    if not b or math.abs(b) > NTH_MAX then p.fail("number too large in :nth-child") end
    return 0, b
  end
  local a, b = s:match("^([+-]?%d*)n([+-]%d+)$")
  if not a then a, b = s:match("^([+-]?%d*)n$"), "0" end
  if not a then p.fail("bad :nth-child argument") end
  if a == "" or a == "+" then a = "1" elseif a == "-" then a = "-1" end
  a, b = math.tointeger(tonumber(a)), math.tointeger(tonumber(b))
  if not a or not b or math.abs(a) > NTH_MAX or math.abs(b) > NTH_MAX then
    p.fail("number too large in :nth-child")
  end
  return a, b
end

local ATTRIBUTE_TESTS = {
  ["="] = function(name, v) return ("@%s = %s"):format(name, literal(v)) end,
  ["~="] = function(name, v)
    if v == "" or v:find("%s") then return "false()" end
    return ("contains(concat(' ', normalize-space(@%s), ' '), %s)"):format(name, literal(" " .. v .. " "))
  end,
  ["^="] = function(name, v)
    if v == "" then return "false()" end
    return ("starts-with(@%s, %s)"):format(name, literal(v))
  end,
  ["$="] = function(name, v)
    if v == "" then return "false()" end
    return ("substring(@%s, string-length(@%s) - %d) = %s"):format(name, name, #v - 1, literal(v))
  end,
  ["*="] = function(name, v)
    if v == "" then return "false()" end
    return ("contains(@%s, %s)"):format(name, literal(v))
  end,
  ["|="] = function(name, v)
    return ("(@%s = %s or starts-with(@%s, %s))"):format(name, literal(v), name, literal(v .. "-"))
  end,
}

-- Parses one compound selector; returns its element name and predicates (nil when empty).
local function compound(p)
  local name = p.take("%*") or p.ident()
  local predicates = {}
  while true do
    if p.take("#") then
      local id = p.ident() or p.fail("expected an id")
      predicates[#predicates + 1] = ("[@id = %s]"):format(literal(id))
    elseif p.take("%.") then
      local class = p.ident() or p.fail("expected a class name")
      predicates[#predicates + 1] =
        ("[contains(concat(' ', normalize-space(@class), ' '), %s)]"):format(literal(" " .. class .. " "))
    elseif p.take("%[") then
      p.space()
      local attr = (p.ident() or p.fail("expected an attribute name")):lower()
      p.space()
      local op = p.take("[~^$*|]?=")
      if op then
        p.space()
        local value = p.quoted() or p.ident() or p.fail("expected a value")
        p.space()
        if p.take("[iI]") then p.space() end   -- case flag: accepted, not honoured
        predicates[#predicates + 1] = "[" .. ATTRIBUTE_TESTS[op](attr, value) .. "]"
      else
        predicates[#predicates + 1] = ("[@%s]"):format(attr)
      end
      if not p.take("%]") then p.fail("expected ]") end
    elseif p.peek(":[^:]") then
      p.take(":")
      local pseudo = (p.ident() or p.fail("expected a pseudo-class")):lower()
      if pseudo == "first-child" then
        predicates[#predicates + 1] = "[count(preceding-sibling::*) = 0]"
      elseif pseudo == "last-child" then
        predicates[#predicates + 1] = "[count(following-sibling::*) = 0]"
      elseif pseudo == "nth-child" then
        local argument = p.take("%(([^)]*)%)") or p.fail("expected (an+b)")
        predicates[#predicates + 1] = nth_predicate(nth_arguments(p, argument:sub(2, -2)))
      else
        p.fail("unsupported pseudo-class :" .. pseudo)
      end
    else
      break
    end
  end
  if not name and #predicates == 0 then return nil end
  return (name or "*"):lower(), table.concat(predicates)
end

-- The ::text / ::attr(name) suffix, or nil.
local function pseudo_element(p)
  if not p.take("::") then return nil end
  local what = (p.ident() or p.fail("expected a pseudo-element")):lower()
  if what == "text" then return "/text()" end
  if what == "attr" then
    if not p.take("%(") then p.fail("expected ::attr(name)") end
    p.space()
    local name = p.ident() or p.fail("expected an attribute name")
    p.space()
    if not p.take("%)") then p.fail("expected )") end
    return "/@" .. name:lower()
  end
  p.fail("unsupported pseudo-element ::" .. what)
end

-- The XPath step that finds, from a compound's element, the element the combinator
-- before it connects it to (right to left), and the left-to-right step for the same.
local RIGHT_TO_LEFT = { [" "] = "ancestor::", [">"] = "parent::", ["~"] = "preceding-sibling::" }
local LEFT_TO_RIGHT = { [" "] = "/descendant::", [">"] = "/", ["~"] = "/following-sibling::" }

-- The path of a chain: compounds[i] = { name, predicates }, combinators[i] between i and i+1.
local function chain_path(compounds, combinators, from_node)
  local n = #compounds
  local sideways = false
  for _, c in ipairs(combinators) do sideways = sideways or c == "+" or c == "~" end
  if from_node and sideways then
    local path = "descendant-or-self::" .. compounds[1][1] .. compounds[1][2]
    for i = 2, n do
      local c, name, predicates = combinators[i - 1], compounds[i][1], compounds[i][2]
      if c == "+" then
        path = path .. "/following-sibling::*[1]/self::" .. name .. predicates
      else
        path = path .. LEFT_TO_RIGHT[c] .. name .. predicates
      end
    end
    return path
  end
  local condition = ""
  for i = 1, n - 1 do
    local c, name, predicates = combinators[i], compounds[i][1], compounds[i][2]
    if i == 1 and from_node then predicates = predicates .. "[count(ancestor::node()) >= $forage_depth]" end
    local step
    if c == "+" then
      step = "preceding-sibling::*[1][self::" .. name .. "]" .. predicates
    else
      step = RIGHT_TO_LEFT[c] .. name .. predicates
    end
    condition = "[" .. step .. condition .. "]"
  end
  return "descendant-or-self::" .. compounds[n][1] .. compounds[n][2] .. condition
end

-- Parses one selector of a group into an XPath path.
local function selector_path(p, from_node)
  p.space()
  local name, predicates = compound(p)
  if not name then
    -- A bare pseudo-element: ::text is every text below, ::attr(x) the node's own attribute.
    local suffix = pseudo_element(p) or p.fail("expected a selector")
    p.space()
    if suffix == "/text()" then return "descendant-or-self::text()" end
    return suffix:sub(2)
  end
  local compounds, combinators, suffix = { { name, predicates } }, {}, ""
  while true do
    local spaced = p.space()
    local combinator = p.take("[>+~]")
    if combinator then p.space() end
    if p.done() or p.peek(",") then
      if combinator then p.fail("dangling combinator") end
      break
    end
    if p.peek("::") then
      if spaced or combinator then p.fail("misplaced pseudo-element") end
      suffix = pseudo_element(p)
      p.space()
      break
    end
    if not spaced and not combinator then p.fail("unexpected character") end
    name, predicates = compound(p)
    if not name then p.fail("expected a selector after a combinator") end
    combinators[#combinators + 1] = combinator or " "
    compounds[#compounds + 1] = { name, predicates }
  end
  return chain_path(compounds, combinators, from_node) .. suffix
end

-- compile(selector [, from_node]) -> the XPath expression for selector, evaluated from a
-- document, or from a node when from_node is true; raises when it is invalid.
function M.compile(selector, from_node)
  args.check(1, selector, "string", "compile")
  from_node = from_node == true
  local cache = caches[from_node]
  local xpath = cache[selector]
  if xpath then return xpath end
  local p = parser(selector)
  local paths = {}
  repeat
    paths[#paths + 1] = selector_path(p, from_node)
    if not p.done() and not p.take(",") then p.fail("unexpected character") end
  until p.done() and #paths > 0 and not selector:match(",%s*$")
  xpath = table.concat(paths, " | ")
  if cached >= CACHE_MAX then
    caches, cached = { [false] = {}, [true] = {} }, 0
    cache = caches[from_node]
  end
  cache[selector], cached = xpath, cached + 1
  return xpath
end

return M
