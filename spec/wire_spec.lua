-- The wire format (src/wire.c, docs/wire.md): round trips, refusals, and hostile input.
-- luacheck: globals FORAGE_WIRE_SPEC_GLOBAL
local core = require "forage.core"

local encode, decode = core.encode, core.decode
local CODE = { code = true }

local function roundtrip(v, opts)
  local s = encode(v, opts)
  local back, err = decode(s, opts)
  assert(err == nil, err)
  return back
end

-- The bytes of a float: equality that sees NaN payloads and the sign of zero.
local function bits(x)
  return string.pack("<d", x)
end

-- Returns the message an encode raises.
local function refusal(v, opts)
  local ok, err = pcall(encode, v, opts)
  assert(not ok, "encode should have refused")
  return err
end

local function nested(levels)
  local t = {}
  for _ = 2, levels do t = { t } end
  return t
end

describe("wire", function()
  describe("scalars", function()
    it("round-trips nil and booleans", function()
      assert.is_nil(roundtrip(nil))
      assert.is_true(roundtrip(true))
      assert.is_false(roundtrip(false))
    end)

    it("keeps integers integers, at every size", function()
      for _, n in ipairs { 0, 1, 127, 128, 255, 256, -1, -32, -33, -128, 1 << 31, -(1 << 31), 1 << 53, 1 << 62,
                           math.maxinteger, math.mininteger, math.mininteger + 1, math.maxinteger - 1 } do
        local back = roundtrip(n)
        assert.are.equal("integer", math.type(back))
        assert.are.equal(n, back)
      end
    end)

    it("keeps floats floats, including integral ones", function()
      for _, x in ipairs { 3.0, 0.0, 0.5, -1.5, 1e300, -1e-300, 2^63, -2^63, math.pi, math.huge, -math.huge } do
        local back = roundtrip(x)
        assert.are.equal("float", math.type(back))
        assert.are.equal(bits(x), bits(back))
      end
    end)

    it("keeps -0.0, NaN and NaN payloads bit for bit", function()
      local negzero = roundtrip(-0.0)
      assert.are.equal("float", math.type(negzero))
      assert.are.equal(-math.huge, 1 / negzero)
      local nan = roundtrip(0 / 0)
      assert.is_true(nan ~= nan)
      assert.are.equal(bits(0 / 0), bits(nan))
      local payload = string.unpack("<d", "\1\2\3\4\5\0\248\127")
      assert.are.equal(bits(payload), bits(roundtrip(payload)))
    end)

    it("moves strings byte for byte", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      for _, s in ipairs { "", "x", ("a"):rep(63), ("b"):rep(64), "\0", "a\0b\0", table.concat(all),
                           ("\0\1\255"):rep(100000) } do
        assert.are.equal(s, roundtrip(s))
      end
    end)

    it("writes the documented bytes", function()
      assert.are.equal("\1\0\198\3\0\1\2\129x", encode { 1, 2, "x" })
      assert.are.equal("\1\0\127", encode(127))
      assert.are.equal("\1\0\224", encode(-32))
      assert.are.equal("\1\0\195\128\2", encode(128))
      assert.are.equal("\1\0\196\0\0\0\0\0\0\8\64", encode(3.0))
      assert.are.equal("\1\0\192", encode(nil))
      assert.are.equal("\1\1\198\0\1\129a\199\1", (function() local t = {}; t.a = t; return encode(t) end)())
    end)
  end)

  describe("tables", function()
    it("round-trips arrays, hashes and mixed tables", function()
      local t = roundtrip { 1, 2.0, "three", { 4 }, a = 1, ["b c"] = { d = false }, [-1] = "neg", [1.5] = "f",
                            [true] = "yes" }
      assert.are.same({ 1, 2.0, "three", { 4 }, a = 1, ["b c"] = { d = false }, [-1] = "neg", [1.5] = "f",
                        [true] = "yes" }, t)
      assert.are.equal("float", math.type(t[2]))
      assert.are.same({}, roundtrip {})
    end)

    it("keeps what follows a hole", function()
      local t = roundtrip { 1, nil, 3, nil, 5 }
      assert.are.equal(1, t[1])
      assert.is_nil(t[2])
      assert.are.equal(3, t[3])
      assert.are.equal(5, t[5])
    end)

    it("round-trips big arrays and big hashes", function()
      local arr, hash = {}, {}
      for i = 1, 5000 do
        arr[i] = i * 3
        hash["k" .. i] = i
      end
      assert.are.same(arr, roundtrip(arr))
      assert.are.same(hash, roundtrip(hash))
      arr.extra = hash
      assert.are.same(arr, roundtrip(arr))
    end)

    it("round-trips tables used as keys", function()
      local k = { "key" }
      local t = roundtrip { [k] = "v" }
      local key, value = next(t)
      assert.are.same({ "key" }, key)
      assert.are.equal("v", value)
    end)

    it("preserves cycles", function()
      local t = { name = "t" }
      t.self = t
      t[1] = t
      local back = roundtrip(t)
      assert.are.equal(back, back.self)
      assert.are.equal(back, back[1])
      assert.are.equal("t", back.name)
    end)

    it("preserves shared references, as values and as keys", function()
      local shared = { 42 }
      local back = roundtrip { shared, shared, a = shared, [shared] = shared }
      assert.are.equal(back[1], back[2])
      assert.are.equal(back[1], back.a)
      assert.are.equal(back[1], back[back[1]])
      assert.are.equal(42, back[1][1])
    end)

    it("preserves sharing among many tables", function()
      local list = {}
      for i = 1, 100 do list[i] = { i } end
      local t = { list = list, again = {} }
      for i = 100, 1, -1 do t.again[#t.again + 1] = list[i] end
      local back = roundtrip(t)
      for i = 1, 100 do assert.are.equal(back.list[i], back.again[101 - i]) end
    end)

    it("sends raw contents and no metatable", function()
      local mt = { __index = function() return "meta" end }
      local back = roundtrip(setmetatable({ x = 1 }, mt))
      assert.is_nil(getmetatable(back))
      assert.is_nil(back.y)
      assert.are.equal(1, back.x)
    end)

    it("nests exactly WIRE_MAX_DEPTH levels", function()
      local back = roundtrip(nested(200))
      for _ = 1, 199 do back = back[1] end
      assert.are.same({}, back)
    end)

    it("refuses one level more, naming the path and the cap", function()
      assert.are.equal("value" .. ("[1]"):rep(16) .. "..." .. ("[1]"):rep(21) .. ": nested deeper than 200 levels",
                       refusal(nested(201)))
    end)

    it("counts keys and functions as levels", function()
      local deep = nested(200)
      assert.matches("<key>.*: nested deeper than 200 levels", refusal { [deep] = true })
      assert.matches("<upvalue deep>.*: nested deeper than 200 levels",
                     refusal(function() return deep end, CODE))
    end)
  end)

  describe("functions (code mode)", function()
    it("carry bytecode and upvalues by value", function()
      local base, names = 10, { "a", "b" }
      local function f(x) return x + base, names[2] end
      local g = roundtrip(f, CODE)
      assert.are_not.equal(f, g)
      local n, s = g(5)
      assert.are.equal(15, n)
      assert.are.equal("b", s)
      base = 0
      assert.are.equal(15, (g(5)))
    end)

    it("keep line numbers for tracebacks", function()
      local line = debug.getinfo(1, "l").currentline + 1
      local function boom() error("boom") end
      local ok, err = pcall(roundtrip(boom, CODE))
      assert.is_false(ok)
      assert.matches("wire_spec%.lua:" .. line .. ": boom", err)
    end)

    it("share tables between upvalues and data", function()
      local shared = {}
      local function put(v) shared[#shared + 1] = v end
      local function count() return #shared end
      local back = roundtrip({ put = put, count = count, shared = shared }, CODE)
      back.put("x")
      back.put("y")
      assert.are.equal(2, back.count())
      assert.are.same({ "x", "y" }, back.shared)
      assert.are.same({}, shared)
    end)

    it("share upvalue cells between closures", function()
      local n = 0
      local function inc() n = n + 1; return n end
      local function get() return n end
      local back = roundtrip({ inc, get }, CODE)
      back[1]()
      back[1]()
      assert.are.equal(2, back[2]())
      assert.are.equal(0, n)
    end)

    it("share cells and tables among many closures", function()
      local count, log = 0, {}
      local fns = {}
      for i = 1, 50 do fns[i] = function() count = count + i; log[#log + 1] = i; return count end end
      local back = roundtrip(fns, CODE)
      back[1]()
      back[50]()
      assert.are.equal(54, back[3]())
      assert.are.equal(0, count)
    end)

    it("send a recursive local function and a function twice", function()
      local function fact(k) if k <= 1 then return 1 end return k * fact(k - 1) end
      local back = roundtrip({ fact, fact }, CODE)
      assert.are.equal(back[1], back[2])
      assert.are.equal(3628800, back[1](10))
    end)

    it("rebind _ENV to the receiver's globals", function()
      local function read() return FORAGE_WIRE_SPEC_GLOBAL end
      local s = encode(read, CODE)
      -- Set in the real globals: busted runs this file in an environment of its own.
      local globals = debug.getregistry()[2]
      globals.FORAGE_WIRE_SPEC_GLOBAL = "set after encoding"
      assert.are.equal("set after encoding", decode(s, CODE)())
      globals.FORAGE_WIRE_SPEC_GLOBAL = nil
      assert.are.equal(globals, roundtrip(globals, CODE))
    end)

    it("send loaded modules and their fields by name", function()
      local string, fmt, floor, out = string, string.format, math.floor, io.stdout -- luacheck: ignore 431
      local function f(x) return fmt("%d", floor(x)), string, out end
      local back = roundtrip(f, CODE)
      local s, str, o = back(3.7)
      assert.are.equal("3", s)
      assert.are.equal(string, str)
      assert.are.equal(io.stdout, o)
      local t = roundtrip({ string.format, io.stdout, math }, CODE)
      assert.are.equal(string.format, t[1])
      assert.are.equal(io.stdout, t[2])
      assert.are.equal(math, t[3])
    end)

    it("find modules loaded after the index was built", function()
      roundtrip(string.format, CODE)
      local mod = { answer = 42 }
      package.loaded["forage_wire_spec_mod"] = mod
      local function f() return mod end
      assert.are.equal(mod, roundtrip(f, CODE)())
      -- A module met as plain data before any function: found through its C function.
      local wrapped = coroutine.wrap(function() end)
      local mod2 = { run = wrapped }
      package.loaded["forage_wire_spec_mod2"] = mod2
      assert.are.equal(mod2, roundtrip({ mod2 }, CODE)[1])
      package.loaded["forage_wire_spec_mod"] = nil
      package.loaded["forage_wire_spec_mod2"] = nil
    end)

    it("copies a table that stopped being a module", function()
      local old = { 1 }
      local function f() return old end
      package.loaded["forage_wire_spec_gone"] = old
      assert.are.equal(old, roundtrip(f, CODE)())
      package.loaded["forage_wire_spec_gone"] = { 2 }
      local back = roundtrip(f, CODE)()
      assert.are_not.equal(old, back)
      assert.are.same({ 1 }, back)
      package.loaded["forage_wire_spec_gone"] = nil
    end)

    it("fail to decode a name the receiver has not loaded", function()
      local mod = {}
      package.loaded["forage_wire_spec_absent"] = mod
      local s = encode(function() return mod end, CODE)
      package.loaded["forage_wire_spec_absent"] = nil
      local v, err = decode(s, CODE)
      assert.is_nil(v)
      assert.matches('^wire: module "forage_wire_spec_absent" is not loaded at byte %d+$', err)
    end)
  end)

  describe("tables with a class (code mode)", function()
    local GEO, CLASS = "forage_wire_spec_geo", "forage_wire_spec_class"
    local Point

    -- A fresh class each time, as a module field (GEO.Point) and as a module itself (CLASS).
    before_each(function()
      Point = {}
      Point.__index = Point
      function Point:norm2() return self.x * self.x + self.y * self.y end
    end)

    after_each(function()
      package.loaded[GEO] = nil
      package.loaded[CLASS] = nil
    end)

    local function point(x, y) return setmetatable({ x = x, y = y }, Point) end

    it("send the metatable by its field name, and methods work after the trip", function()
      package.loaded[GEO] = { Point = Point }
      local s = encode(point(3, 4), CODE)
      assert.are.equal("\1\2\206\204" .. string.char(#GEO) .. GEO .. "\5Point\198", s:sub(1, 12 + #GEO))
      local back = decode(s, CODE)
      assert.are.equal(Point, getmetatable(back))
      assert.are.equal(25, back:norm2())
    end)

    it("send the metatable by its module name", function()
      package.loaded[CLASS] = Point
      local back = roundtrip({ p = point(1, 2) }, CODE)
      assert.are.equal(Point, getmetatable(back.p))
      assert.are.equal(5, back.p:norm2())
    end)

    it("find a class module loaded after the index was built, in a message with no function", function()
      roundtrip(string.format, CODE)
      package.loaded[GEO] = { Point = Point }
      assert.are.equal(Point, getmetatable(roundtrip({ point(0, 1) }, CODE)[1]))
    end)

    it("ignore __metatable on both sides", function()
      Point.__metatable = "locked"
      package.loaded[GEO] = { Point = Point }
      local back = roundtrip(point(1, 1), CODE)
      assert.are.equal(Point, debug.getmetatable(back))
      assert.are.equal("locked", getmetatable(back))
    end)

    it("keep a self-referencing instance and two references to one instance", function()
      package.loaded[GEO] = { Point = Point }
      local p = point(3, 4)
      p.self = p
      local back = roundtrip({ p, p, { p } }, CODE)
      assert.are.equal(back[1], back[2])
      assert.are.equal(back[1], back[3][1])
      assert.are.equal(back[1], back[1].self)
      assert.are.equal(Point, getmetatable(back[1]))
      assert.are.equal(25, back[1].self:norm2())
    end)

    it("send the class as a value by copy, as any table that is not a module", function()
      package.loaded[GEO] = { Point = Point }
      local back = roundtrip({ Point, point(1, 0) }, CODE)
      assert.are_not.equal(Point, back[1])
      assert.are.equal(back[1], back[1].__index)
      assert.are.equal(Point, getmetatable(back[2]))
    end)

    it("send an instance whose metatable has no name bare, as before", function()
      local back = roundtrip(point(3, 4), CODE)
      assert.is_nil(getmetatable(back))
      assert.are.same({ x = 3, y = 4 }, back)
    end)

    it("never send a class in data mode", function()
      package.loaded[GEO] = { Point = Point }
      local s = encode(point(3, 4))
      assert.are.equal(encode { x = 3, y = 4 }, s)
      assert.is_nil(getmetatable(decode(s)))
      local v, err = decode("\1\0\206\204" .. string.char(#GEO) .. GEO .. "\5Point\198\0\0")
      assert.is_nil(v)
      assert.are.equal("wire: function or named value in data mode at byte 2", err)
    end)

    it("refuse a class without a name, a class that is not a table, and a class without a table", function()
      package.loaded[CLASS] = true   -- what require leaves for a module that returns nothing
      local cases = {
        { "\1\2\206\131abc", "wire: class without a name at byte 3" },
        { "\1\2\206\203" .. string.char(#CLASS) .. CLASS .. "\198\0\0", "wire: class is not a table at byte 3" },
        { "\1\2\206\204\6string\6format\198\0\0", "wire: class is not a table at byte 3" },
        { "\1\2\206\203\6string\1", "wire: class without a table at byte 11" },
        { "\1\2\206", "wire: truncated input at byte 3" },
        { "\1\2\206\203\6string", "wire: truncated input at byte 11" },
        { "\1\2\206\203\6string\198\1\0", "wire: more values announced than bytes left at byte 11" },
      }
      for _, case in ipairs(cases) do
        assert.are.same({ nil, case[2], "malformed" }, { decode(case[1], CODE) })
      end
      -- Well-formed, the same bytes decode.
      assert.are.equal(string, getmetatable(decode("\1\2\206\203\6string\198\0\0", CODE)))
    end)

    it("fail to decode a class the receiver has not loaded, naming its module", function()
      package.loaded[GEO] = { Point = Point }
      local s = encode(point(1, 2), CODE)
      package.loaded[GEO] = nil
      local v, err = decode(s, CODE)
      assert.is_nil(v)
      assert.are.equal('wire: module "' .. GEO .. '" is not loaded at byte 3', err)
    end)

    it("reach a pool task as an argument, whose methods work there", function()
      local forage = require "forage"
      package.loaded[GEO] = { Point = Point }   -- before the workers are forked
      local pool <close> = forage.pool(1)
      local norm, class_there, p = pool:apply(function(q)
        return q:norm2(), getmetatable(q) == package.loaded[GEO].Point, q
      end, { point(3, 4) })
      assert.are.equal(25, norm)
      assert.is_true(class_there)
      assert.are.equal(Point, getmetatable(p))
      pool:close()
      pool:join()
    end)
  end)

  describe("refusals", function()
    it("name the path to a userdata", function()
      local conn = io.tmpfile()
      assert.are.equal("args[2].conn: cannot send userdata (FILE*)",
                       refusal({ 1, { conn = conn } }, { root = "args" }))
      assert.are.equal("args[2].conn: cannot send userdata (FILE*)",
                       refusal({ 1, { conn = conn } }, { root = "args", code = true }))
      assert.are.equal("value.out: cannot send userdata (FILE*)", refusal { out = io.stdout })
      conn:close()
    end)

    it("write keys as Lua source would", function()
      local co = coroutine.create(function() end)
      assert.are.equal('args["a b"][true][3]["end"][1.5]["say \\"hi\\""]: cannot send thread',
                       refusal({ ["a b"] = { [true] = { [3] = { ["end"] = { [1.5] = { ['say "hi"'] = co } } } } } },
                               { root = "args" }))
      assert.are.equal("args<key>[1]: cannot send thread", refusal({ [{ co }] = true }, { root = "args" }))
      assert.are.equal("value[1]: cannot send thread", refusal { co })
      assert.are.equal("value: cannot send thread", refusal(co))
    end)

    it("name an upvalue", function()
      local conn = io.tmpfile()
      local function f() return conn end
      assert.are.equal("args[1]<upvalue conn>: cannot send userdata (FILE*)",
                       refusal({ f }, { root = "args", code = true }))
      conn:close()
    end)

    it("refuse C functions that no module holds", function()
      local wrapped = coroutine.wrap(function() end)
      assert.are.equal("args.cb: cannot send C function", refusal({ cb = wrapped }, { root = "args", code = true }))
    end)

    it("refuse functions in data mode", function()
      assert.are.equal("value[1]: cannot send function in data mode", refusal { function() end })
      assert.are.equal("value: cannot send function in data mode", refusal(print))
      assert.are.equal("error.f: cannot send function in data mode", refusal({ f = print }, { root = "error" }))
    end)

    it("leave nothing behind: the next encode works", function()
      refusal { io.stdout }
      assert.are.same({ 1 }, roundtrip { 1 })
    end)
  end)

  describe("the Lua API", function()
    it("survives encodes from finalizers run in the middle of an encode", function()
      local mt = { __gc = function() assert(decode(encode { 1, { "inner" } })[2][1] == "inner") end }
      local big = {}
      for i = 1, 2000 do big[i] = { i, tostring(i) } end
      for _ = 1, 20 do
        for _ = 1, 200 do setmetatable({}, mt) end
        local back = decode(encode(big))
        assert.are.equal("1234", back[1234][2])
      end
      collectgarbage()
    end)

    it("tells a decoded nil from a failure: nil, message, \"malformed\"", function()
      assert.are.equal(1, select("#", decode(encode(nil))))
      assert.are.same({ nil, "wire: truncated input at byte 0", "malformed" }, { decode("") })
    end)

    it("checks its arguments in Lua's words", function()
      assert.has_error(function() encode() end, "bad argument #1 to 'encode' (value expected)")
      assert.has_error(function() encode(1, 2) end, "bad argument #2 to 'encode' (table expected, got number)")
      assert.has_error(function() decode(123) end, "bad argument #1 to 'decode' (string expected, got number)")
      assert.has_error(function() decode("", "code") end, "bad argument #2 to 'decode' (table expected, got string)")
    end)

    it("rejects unknown options, naming the key and the function", function()
      assert.has_error(function() encode(1, { cod = true }) end,
                       "forage.encode: unknown option 'cod' (known: code, root)")
      assert.has_error(function() decode(encode(1), { root = "x" }) end,
                       "forage.decode: unknown option 'root' (known: code)")
      assert.has_error(function() encode(1, { [1] = true }) end, "forage.encode: unknown option 1 (known: code, root)")
      assert.has_error(function() core.decode_into(encode { 1 }, {}, 1, { coed = true }) end,
                       "decode_into: unknown option 'coed' (known: code)")
    end)

    it("checks the types of option values", function()
      assert.has_error(function() encode(1, { root = 3 }) end, "forage.encode: option 'root' must be a string, got 3")
      assert.has_error(function() encode(1, { code = "yes" }) end,
                       "forage.encode: option 'code' must be a boolean, got 'yes'")
      assert.has_error(function() decode(encode(1), { code = 1 }) end,
                       "forage.decode: option 'code' must be a boolean, got 1")
      assert.are.equal(1, decode(encode(1, { code = false }), { code = false }))
    end)

    it("raises a refusal at the caller's line, never inside forage", function()
      local source = debug.getinfo(1, "S").short_src
      local ok, err = pcall(function() encode(print) end) local line = debug.getinfo(1, "l").currentline
      assert.is_false(ok)
      assert.are.equal(source .. ":" .. line .. ": value: cannot send function in data mode", err)
    end)

    it("cuts long names in its messages", function()
      local long = ("k"):rep(10 * 1000 * 1000)
      local err = refusal({ [long] = print }, { root = long })
      assert.are.equal(("k"):rep(60) .. '...["' .. ("k"):rep(40) .. '..."]: cannot send function in data mode', err)
      local u = io.tmpfile()
      u:close()   -- before its metatable goes: nothing is left open
      debug.setmetatable(u, { __name = ("n"):rep(1000) })
      assert.are.equal("value: cannot send userdata (" .. ("n"):rep(60) .. ")", refusal(u))
      local mod = {}
      local name = ("m"):rep(100000)
      package.loaded[name] = mod
      local s = encode(function() return mod end, CODE)
      package.loaded[name] = nil
      local v, msg, kind = decode(s, CODE)
      assert.is_nil(v)
      assert.are.equal("malformed", kind)
      assert.is_true(#msg < 200, msg)
    end)
  end)

  describe("decode_into", function()
    local decode_into = core.decode_into

    it("stores a list's items from an offset on", function()
      local t = { "kept" }
      assert.are.equal(t, decode_into(encode { "a", "b" }, t, 2))
      assert.are.same({ "kept", "a", "b" }, t)
      -- The general path (a hash part, references) follows the same rule.
      local shared = {}
      t = decode_into(encode { shared, shared, x = 1 }, {}, 5)
      assert.are.equal(t[5], t[6])
      assert.is_nil(t.x)
    end)

    it("uses every index up to math.maxinteger, and negative ones", function()
      local t = decode_into(encode { 1, 2 }, {}, math.maxinteger - 1)
      assert.are.equal(1, t[math.maxinteger - 1])
      assert.are.equal(2, t[math.maxinteger])
      t = decode_into(encode { 1, 2 }, {}, math.mininteger)
      assert.are.equal(1, t[math.mininteger])
      assert.are.equal(2, t[math.mininteger + 1])
      t = decode_into(encode { [math.maxinteger] = "last" }, {}, 1)
      assert.are.equal("last", t[math.maxinteger])
    end)

    it("raises, storing nothing, when the items would pass math.maxinteger", function()
      local t = {}
      assert.has_error(function() decode_into(encode { 1, 2 }, t, math.maxinteger) end,
        "bad argument #3 to 'decode_into' (a list of 2 items does not fit in a table from index "
        .. math.maxinteger .. ")")
      assert.has_error(function() decode_into(encode { 1, 2, x = 3 }, t, math.maxinteger) end,
        "bad argument #3 to 'decode_into' (a list of 2 items does not fit in a table from index "
        .. math.maxinteger .. ")")
      assert.has_error(function() decode_into(encode { [math.maxinteger] = 1 }, t, 2) end)
      assert.is_nil(next(t))
    end)

    it("returns nil, message, \"malformed\" on bad bytes", function()
      local v, err, kind = decode_into("\1\0\198\2\0\1", {}, 1)
      assert.is_nil(v)
      assert.matches("^wire: ", err)
      assert.are.equal("malformed", kind)
      assert.are.same({ nil, "wire: a list was expected", "malformed" }, { decode_into(encode(1), {}, 1) })
    end)
  end)

  describe("decoding bad input", function()
    local samples = {
      encode { 1, 2, "x" },
      encode { a = { b = { c = 1.5 } }, [10] = "ten", list = { true, false, "s\0s" } },
      (function() local t = { 1 }; t.self = t; return encode { t, t } end)(),
      encode(("long"):rep(40)),
      encode(-123456789),
    }

    it("rejects another version", function()
      local v, err = decode("\7" .. samples[1]:sub(2))
      assert.is_nil(v)
      assert.are.equal("wire: unsupported version 7", err)
    end)

    it("returns nil and an error for every truncation", function()
      for _, s in ipairs(samples) do
        for len = 0, #s - 1 do
          local v, err, kind = decode(s:sub(1, len))
          assert.is_nil(v)
          assert.matches("^wire: .* at byte %d+$", err)
          assert.are.equal("malformed", kind)
        end
      end
      assert.are.equal("wire: truncated input at byte 0", select(2, decode("")))
    end)

    it("rejects trailing bytes", function()
      local v, err = decode(samples[1] .. "\0")
      assert.is_nil(v)
      assert.are.equal("wire: trailing bytes at byte " .. #samples[1], err)
    end)

    it("refuses code in data mode", function()
      local s = encode(function() end, CODE)
      local v, err = decode(s)
      assert.is_nil(v)
      assert.matches("^wire: functions or named values in data mode at byte 1$", err)
      -- The same tag behind a header that does not announce it.
      v, err = decode("\1\0\202")
      assert.is_nil(v)
      assert.are.equal("wire: function or named value in data mode at byte 2", err)
    end)

    it("rejects references that point nowhere", function()
      assert.is_nil((decode "\1\0\199\1"))
      assert.is_nil((decode "\1\1\199\1"))
      assert.is_nil((decode "\1\1\198\1\0\199\2"))
      assert.is_nil((decode "\1\1\198\0\1\192\1"))
    end)

    it("refuses counts larger than the input before allocating", function()
      local v, err = decode("\1\0\198\255\255\255\255\15\0")
      assert.is_nil(v)
      assert.matches("more values announced than bytes left", err)
      assert.is_nil((decode "\1\0\197\255\255\255\255\255\255\255\255\255\1"))
      assert.is_nil((decode "\1\0\195\255\255\255\255\255\255\255\255\255\2"))
    end)

    it("caps the depth of decoded tables", function()
      local t = decode("\1\0" .. ("\198\1\0"):rep(199) .. "\198\0\0")
      for _ = 1, 199 do t = t[1] end
      assert.are.same({}, t)
      local v, err = decode("\1\0" .. ("\198\1\0"):rep(200) .. "\198\0\0")
      assert.is_nil(v)
      assert.matches("nested deeper than 200 levels", err)
    end)

    it("rejects nil and NaN keys", function()
      assert.is_nil((decode "\1\0\198\0\1\192\1"))
      assert.is_nil((decode("\1\0\198\0\1\196\0\0\0\0\0\0\248\127\1")))
    end)

    it("never crashes on random bytes", function()
      math.randomseed(20240601)
      local decoded = 0
      for i = 1, 4000 do
        local n = math.random(0, 40)
        local bytes = {}
        for j = 1, n do bytes[j] = string.char(math.random(0, 255)) end
        local s = table.concat(bytes)
        if i % 2 == 0 then s = "\1" .. string.char(math.random(0, 1)) .. s end
        local ok, v, err = pcall(decode, s)
        assert.is_true(ok, v)
        if v == nil and err then
          assert.matches("^wire: ", err)
        else
          decoded = decoded + 1
        end
      end
      assert.is_true(decoded > 0)
    end)

    it("never crashes on mutated messages", function()
      math.randomseed(7)
      for _ = 1, 4000 do
        local s = samples[math.random(#samples)]
        local pos = math.random(#s)
        s = s:sub(1, pos - 1) .. string.char(math.random(0, 255)) .. s:sub(pos + 1)
        local ok, v = pcall(decode, s)
        assert.is_true(ok, v)
      end
    end)
  end)
end)
