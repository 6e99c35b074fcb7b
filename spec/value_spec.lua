local forage = require "forage"

-- Runs fn(...) in n children at once and joins them all; every child must exit 0.
local function run_children(n, fn, ...)
  local procs = {}
  for k = 1, n do procs[k] = forage.process(fn, k, ...):start() end
  for k, p in ipairs(procs) do
    local code = p:join(20)
    if code == nil then p:kill() p:join(5) end
    assert.equal(0, code, "child " .. k)
  end
end

local function range(n)
  local list = {}
  for i = 0, n - 1 do list[#list + 1] = i end
  return list
end

-- name, code(s), smallest, largest of each integer type
local INTEGER_TYPES = {
  { "int8", { "b" }, -128, 127 },
  { "uint8", { "B" }, 0, 255 },
  { "int16", { "h" }, -32768, 32767 },
  { "uint16", { "H" }, 0, 65535 },
  { "int32", { "i" }, -2147483648, 2147483647 },
  { "uint32", { "I" }, 0, 4294967295 },
  { "int64", { "l", "q" }, math.mininteger, math.maxinteger },
  { "uint64", { "L", "Q" }, 0, math.maxinteger },
}

local VALID = "(expected int8, int16, int32, int64, uint8, uint16, uint32, uint64, float, double, "
  .. "or a code b B h H i I l L q Q f d)"

describe("forage.value", function()
  it("holds every integer type and code, integers staying integers", function()
    for _, t in ipairs(INTEGER_TYPES) do
      local name, codes, lo, hi = t[1], t[2], t[3], t[4]
      for _, id in ipairs({ name, table.unpack(codes) }) do
        local v = forage.value(id)
        assert.equal(name, v.type)
        assert.equal(0, v.value)
        assert.equal("integer", math.type(v.value))
        for _, x in ipairs({ lo, hi, 1, 0, 42.0 }) do
          v.value = x
          assert.equal(x, v.value, id)
          assert.equal("integer", math.type(v.value), id)
        end
        assert.equal(lo, forage.value(id, lo).value)
        assert.equal(hi, forage.value(id, hi).value)
      end
    end
  end)

  it("holds float and double, floats staying floats", function()
    local d = forage.value("d", 0.0)
    assert.equal("double", d.type)
    d.value = 3.1415927
    assert.equal(3.1415927, d.value)
    d.value = 3
    assert.equal("float", math.type(d.value))
    assert.equal(3.0, d.value)
    d.value = math.huge
    assert.equal(math.huge, d.value)
    d.value = 0 / 0
    assert.is_true(d.value ~= d.value)
    local f = forage.value("f", 1.5)
    assert.equal("float", f.type)
    assert.equal(1.5, f.value)
    f.value = 0.1                      -- rounded to the nearest 32-bit float
    assert.equal(string.unpack("f", string.pack("f", 0.1)), f.value)
    assert.equal("float", math.type(forage.value("float").value))
    assert.equal(-math.huge, forage.value("float", -math.huge).value)
  end)

  it("reads a uint64 above math.maxinteger as a float, as Lua reads such a numeral", function()
    local u = forage.value("uint64", 2 ^ 63)
    assert.equal("float", math.type(u.value))
    assert.equal(2 ^ 63, u.value)
    u.value = 5
    assert.equal(2 ^ 64 - 1, u:add(-6))   -- wraps, and 2^64 - 1 rounds to 2^64 as a double
  end)

  it("raises clear errors for values that do not fit", function()
    assert.has_error(function() forage.value("int8", 300) end, "value: 300 does not fit int8")
    assert.has_error(function() forage.value("int8", -129) end, "value: -129 does not fit int8")
    assert.has_error(function() forage.value("uint8", -1) end, "value: -1 does not fit uint8")
    assert.has_error(function() forage.value("B", 256) end, "value: 256 does not fit uint8")
    assert.has_error(function() forage.value("uint32", 4294967296) end, "value: 4294967296 does not fit uint32")
    assert.has_error(function() forage.value("int64", 2 ^ 63) end, "value: 9.2233720368548e+18 does not fit int64")
    assert.has_error(function() forage.value("uint64", 2 ^ 64) end, "value: 1.844674407371e+19 does not fit uint64")
    assert.has_error(function() forage.value("f", 1e39) end, "value: 1e+39 does not fit float")
    assert.has_error(function() forage.value("i", 1.5) end, "value: 1.5 has no integer representation")
    assert.has_error(function() forage.value("i", math.huge) end, "value: inf has no integer representation")
    assert.has_error(function() forage.value("i", "3") end, "value: expected a number, got string")
    local v = forage.value("int16")
    assert.has_error(function() v.value = 1e6 end, "value: 1000000.0 does not fit int16")
    assert.has_error(function() v.value = 0.5 end, "value: 0.5 has no integer representation")
    assert.has_error(function() v.value = nil end, "value: expected a number, got nil")
    assert.has_error(function() v.other = 1 end, "value: cannot set field 'other' (only 'value')")
    assert.has_error(function() v[string.rep("f", 100)] = 1 end,
      "value: cannot set field '" .. string.rep("f", 60) .. "...' (only 'value')")
    assert.has_error(function() v:add(0.5) end, "value: 0.5 has no integer representation")
    assert.has_error(function() v:add("x") end, "value: expected a number, got string")
    assert.has_error(function() v:cas(0, 70000) end, "value: 70000 does not fit int16")
    assert.has_error(function() v:exchange(-40000) end, "value: -40000 does not fit int16")
    assert.equal(0, v.value)
  end)

  it("names an unknown type and lists the valid ones", function()
    assert.has_error(function() forage.value("int128") end, "value: unknown type 'int128' " .. VALID)
    assert.has_error(function() forage.value("x", 1) end, "value: unknown type 'x' " .. VALID)
    assert.has_error(function() forage.array("c", 3) end, "array: unknown type 'c' " .. VALID)
    assert.has_error(function() forage.value(string.rep("t", 1000)) end,
      "value: unknown type '" .. string.rep("t", 60) .. "...' " .. VALID)
  end)

  it("add returns the new value; integers wrap as C's do, floats add", function()
    local v = forage.value("int32", 5)
    assert.equal(8, v:add(3))
    assert.equal(6, v:add(-2))
    assert.equal(6, v.value)
    assert.equal("integer", math.type(v:add(0)))
    local small = forage.value("int8", 127)
    assert.equal(-128, small:add(1))
    local byte = forage.value("uint8", 0)
    assert.equal(255, byte:add(-1))
    local d = forage.value("double", 1)
    assert.equal(1.5, d:add(0.5))
    assert.equal("float", math.type(d:add(1)))
    assert.equal(2.5, d.value)
  end)

  it("cas swaps only when the expected value is there, and returns the current value", function()
    local v = forage.value("int64", 10)
    local ok, now = v:cas(10, 20)
    assert.is_true(ok)
    assert.equal(20, now)
    ok, now = v:cas(10, 30)
    assert.is_false(ok)
    assert.equal(20, now)
    assert.equal(20, v.value)
    local d = forage.value("d", 0.25)
    ok, now = d:cas(0.25, 1)
    assert.is_true(ok)
    assert.equal(1.0, now)
    assert.equal("float", math.type(now))
    assert.is_false((d:cas(0.25, 2)))
  end)

  it("exchange stores and returns the old value", function()
    local v = forage.value("uint16", 7)
    assert.equal(7, v:exchange(9))
    assert.equal(9, v:exchange(65535))
    assert.equal(65535, v.value)
  end)

  it("is shared with a child process (the blog's Value('d', 0.0) and Array('i', range(10)))", function()
    local num = forage.value("d", 0.0)
    local arr = forage.array("i", range(10))
    local p = forage.process(function(n, a)
      n.value = 3.1415927
      for i = 1, #a do a[i] = -a[i] end
    end, num, arr):start()
    assert.equal(0, p:join(10))
    assert.equal(3.1415927, num.value)
    assert.same({ 0, -1, -2, -3, -4, -5, -6, -7, -8, -9 }, arr:totable())
  end)

  it("add from 4 processes x 100,000 each gives exactly 400,000", function()
    local v = forage.value("i", 0)
    local d = forage.value("d", 0)
    run_children(4, function()
      for _ = 1, 100000 do
        v:add(1)
        d:add(0.5)
      end
    end)
    assert.equal(400000, v.value)
    assert.equal(200000.0, d.value)
  end)

  it("cas from 4 processes increments exactly", function()
    local v = forage.value("int64", 0)
    run_children(4, function()
      for _ = 1, 20000 do
        local seen = v.value
        while true do
          local ok, now = v:cas(seen, seen + 1)
          if ok then break end
          seen = now
        end
      end
    end)
    assert.equal(80000, v.value)
  end)

  it("is inherited by pool workers forked after it", function()
    local counter = forage.value("int64", 0)
    local pool <close> = forage.pool(2)
    local list = {}
    for i = 1, 100 do list[i] = i end
    -- An upvalue that is a shared object travels by reference: the worker's own view.
    pool:map(function(x) return counter:add(x) end, list)
    assert.equal(5050, counter.value)
  end)

  it("travels by reference, never by copy", function()
    local a, b = forage.pipe()
    local v = forage.value("i")
    a:send(v)
    assert.equal(v, b:recv(1))
    assert.has_error(function() forage.encode(v) end,
      "value: cannot send forage.Value in data mode (only inside the process tree)")
  end)

  it("has __tostring and an idempotent close", function()
    local v = forage.value("int32", 7)
    assert.equal("forage.Value (int32 7)", tostring(v))
    assert.equal("forage.Value (double 0.5)", tostring(forage.value("d", 0.5)))
    v:close()
    v:close()
    assert.equal("forage.Value (closed)", tostring(v))
    assert.has_error(function() return v.value end, "attempt to use a closed forage.Value")
    assert.has_error(function() v:add(1) end, "attempt to use a closed forage.Value")
    do
      local scoped <close> = forage.value("i", 1)
      assert.equal(1, scoped.value)
    end
  end)
end)

describe("forage.array", function()
  it("holds every type, from a length or a list", function()
    for _, t in ipairs(INTEGER_TYPES) do
      local name, codes, lo, hi = t[1], t[2], t[3], t[4]
      for _, id in ipairs({ name, table.unpack(codes) }) do
        local a = forage.array(id, { lo, hi, 0 })
        assert.equal(name, a.type)
        assert.equal(3, #a)
        assert.same({ lo, hi, 0 }, a:totable())
        assert.equal("integer", math.type(a[2]))
        local z = forage.array(id, 4)
        assert.same({ 0, 0, 0, 0 }, z:totable())
      end
    end
    local d = forage.array("double", { 1, 2.5 })
    assert.same({ 1.0, 2.5 }, d:totable())
    assert.equal("float", math.type(d[1]))
    local f = forage.array("f", 2)
    assert.equal("float", math.type(f[2]))
    assert.equal(0, #forage.array("i", 0))
    assert.same({}, forage.array("i", {}):totable())
  end)

  it("indexes from 1, and arr[1] = -arr[1] works", function()
    local arr = forage.array("i", { 5, 6, 7 })
    arr[1] = -arr[1]
    assert.equal(-5, arr[1])
    arr[3] = 70
    assert.same({ -5, 6, 70 }, arr:totable())
    local seen = {}
    for i, x in pairs(arr) do seen[i] = x end
    assert.same({ -5, 6, 70 }, seen)
  end)

  it("reads nil out of range, as a list does, so that ipairs stops after the last element", function()
    local arr = forage.array("i", { 5, 6, 7 })
    local seen, n = {}, 0
    for i, x in ipairs(arr) do
      n = n + 1
      seen[i] = x
    end
    assert.equal(3, n)
    assert.same({ 5, 6, 7 }, seen)
    assert.is_nil(arr[4])
    assert.is_nil(arr[0])
    assert.is_nil(arr[-1])
    assert.is_nil(arr[math.maxinteger])
    assert.is_nil(arr[math.mininteger])
    assert.is_nil(arr[4.0])
    assert.equal(6, arr[2.0])
    for _ in ipairs(forage.array("d", 0)) do error("an empty array has no element") end
  end)

  it("raises on writes out of range, non-integer indexes and values that do not fit", function()
    local arr = forage.array("int8", 10)
    assert.has_error(function() arr[11] = 1 end, "array index 11 out of range (1..10)")
    assert.has_error(function() arr[0] = 1 end, "array index 0 out of range (1..10)")
    assert.has_error(function() return arr[0.5] end, "array index 0.5 is not an integer")
    assert.has_error(function() return arr[0 / 0] end)
    assert.has_error(function() return arr[1.5] end, "array index 1.5 is not an integer")
    assert.has_error(function() arr.x = 1 end, "array index must be an integer, got string")
    assert.has_error(function() arr[1] = 300 end, "array: 300 does not fit int8")
    assert.has_error(function() arr[1] = 2.5 end, "array: 2.5 has no integer representation")
    assert.has_error(function() arr:add(11, 1) end, "array index 11 out of range (1..10)")
    assert.has_error(function() arr:fill(128) end, "array: 128 does not fit int8")
    assert.has_error(function() forage.array("int8", { 1, 2, 300 }) end, "array: 300 does not fit int8 at index 3")
    assert.has_error(function() forage.array("i", { 1, "2" }) end, "array: expected a number at index 2, got string")
    assert.has_error(function() forage.array("i", -1) end,
      "bad argument #2 to 'array' (the length must not be negative)")
    assert.is_nil(arr.nothing)
  end)

  it("fill, add, cas and exchange take the index first", function()
    local arr = forage.array("int32", 3)
    assert.equal(arr, arr:fill(7))
    assert.same({ 7, 7, 7 }, arr:totable())
    assert.equal(12, arr:add(2, 5))
    local ok, now = arr:cas(2, 12, 1)
    assert.is_true(ok)
    assert.equal(1, now)
    ok, now = arr:cas(2, 12, 2)
    assert.is_false(ok)
    assert.equal(1, now)
    assert.equal(1, arr:exchange(2, 9))
    assert.same({ 7, 9, 7 }, arr:totable())
    local d = forage.array("d", 2)
    assert.equal(0.5, d:add(1, 0.5))
  end)

  it("add on elements from 4 processes is exact", function()
    local arr = forage.array("int64", 4)
    run_children(4, function(k)
      for i = 1, 50000 do
        arr:add(1, 1)
        arr:add(k, 2)
        arr:add(1 + i % 4, 1)
      end
    end)
    -- Element 1: every child's add(1, 1), child 1's add(1, 2), and every child's i % 4 == 0.
    local total = 0
    for _, x in ipairs(arr:totable()) do total = total + x end
    assert.equal(4 * 50000 * 4, total)
    assert.equal(4 * 50000 + 2 * 50000 + 4 * 12500, arr[1])
  end)

  it("checks the type of its object", function()
    local v, arr = forage.value("i"), forage.array("i", 1)
    assert.has_error(function() v.add(arr, 1) end,
      "bad argument #1 to 'add' (forage.Value expected, got forage.Array)")
    assert.has_error(function() arr.add(v, 1, 1) end,
      "bad argument #1 to 'add' (forage.Array expected, got forage.Value)")
    assert.has_error(function() arr.totable({}) end, "bad argument #1 to 'totable' (forage.Array expected, got table)")
  end)

  it("has __tostring, __len and an idempotent close", function()
    local arr = forage.array("uint8", 4)
    assert.equal("forage.Array (uint8[4])", tostring(arr))
    arr:close()
    arr:close()
    assert.equal("forage.Array (closed)", tostring(arr))
    assert.has_error(function() return #arr end, "attempt to use a closed forage.Array")
    assert.has_error(function() return arr[1] end, "attempt to use a closed forage.Array")
  end)
end)
