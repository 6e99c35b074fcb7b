-- What the managers' challenge-response authentication stands on (issue 11; src/hmac.c,
-- docs/auth.md): SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) against published vectors
-- and against /usr/bin/python3's hashlib and hmac, random bytes from the kernel (in a
-- forked child too), and the constant-time compare. Every child is reaped (helpers.reaped).
local forage = require "forage"
local core = require "forage.core"
local helpers = require "helpers"

local WAIT = 5   -- seconds: bounds a failure, never a success

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function unhex(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- Asserts that call() raises message, at the caller's line (the call is made in the spec's
-- own code, so that Lua names the function as a user's code would: 'sha256').
local function raises(message, call)
  local ok, err = pcall(call)
  assert.is_false(ok, "no error raised")
  assert.equal(message, err:match("hmac_spec%.lua:%d+: (.*)$"), err)
end

describe("core.sha256", function()
  it("gives the FIPS 180-4 digests: '', 'abc', the 448- and 896-bit messages, a million 'a'", function()
    assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", hex(core.sha256("")))
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", hex(core.sha256("abc")))
    assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      hex(core.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")))
    assert.equal("cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
      hex(core.sha256("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
        .. "mnopqrstnopqrstu")))
    assert.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
      hex(core.sha256(("a"):rep(1000000))))
  end)

  it("returns 32 raw bytes and is binary safe (embedded NULs count)", function()
    local d = core.sha256("a\0b")
    assert.equal(32, #d)
    assert.not_equal(d, core.sha256("a"))
    assert.not_equal(d, core.sha256("a\0c"))
    assert.equal(d, core.sha256("a\0b"))
  end)

  it("refuses a number, in Lua's words", function()
    raises("bad argument #1 to 'sha256' (string expected, got number)", function() core.sha256(1) end)
    raises("bad argument #1 to 'sha256' (string expected, got no value)", function() core.sha256() end)
  end)
end)

describe("core.hmac_sha256", function()
  -- RFC 4231, section 4: test cases 1 to 7 (key, data, HMAC-SHA-256 in hex)
  local cases = {
    { ("\x0b"):rep(20), "Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
    { "Jefe", "what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
    { ("\xaa"):rep(20), ("\xdd"):rep(50), "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
    { unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"), ("\xcd"):rep(50),
      "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b" },
    { ("\x0c"):rep(20), "Test With Truncation", "a3b6167473100ee06e0c796c2955552b" },   -- truncated to 128 bits
    { ("\xaa"):rep(131), "Test Using Larger Than Block-Size Key - Hash Key First",
      "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
    { ("\xaa"):rep(131), "This is a test using a larger than block-size key and a larger than block-size data."
        .. " The key needs to be hashed before being used by the HMAC algorithm.",
      "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2" },
  }
  for i, case in ipairs(cases) do
    it("gives RFC 4231 test case " .. i, function()
      local key, data, expected = case[1], case[2], case[3]
      local mac = core.hmac_sha256(key, data)
      assert.equal(32, #mac)
      assert.equal(expected, hex(mac):sub(1, #expected))
    end)
  end

  it("hashes a key over 64 bytes first (RFC 2104): such a key and its digest give one MAC", function()
    local key = ("k"):rep(65)
    assert.equal(core.hmac_sha256(core.sha256(key), "m"), core.hmac_sha256(key, "m"))
    -- a key of 64 bytes is used as it is, zero-padded keys are one key
    assert.equal(core.hmac_sha256("abc", "m"), core.hmac_sha256("abc" .. ("\0"):rep(61), "m"))
    assert.not_equal(core.hmac_sha256(("k"):rep(64), "m"), core.hmac_sha256(core.sha256(("k"):rep(64)), "m"))
  end)

  it("refuses numbers for the key and the message", function()
    raises("bad argument #1 to 'hmac_sha256' (string expected, got number)", function() core.hmac_sha256(1, "m") end)
    raises("bad argument #2 to 'hmac_sha256' (string expected, got number)", function() core.hmac_sha256("k", 2) end)
  end)
end)

describe("SHA-256 and HMAC-SHA256 across block boundaries", function()
  -- From one /usr/bin/python3 process: sha256(("x"):rep(n)) for n = 0..200, then
  -- hmac(bytes 0, 1, ..., n - 1, ("m"):rep(n)) for n = 0..200 (keys shorter, equal to and
  -- longer than the 64-byte block, starting with a NUL; messages across the padding's
  -- 55/56/64-byte edges).
  local digests, macs
  setup(function()
    local script = "import hashlib, hmac\n"
      .. "for n in range(201): print(hashlib.sha256(b'x' * n).hexdigest())\n"
      .. "for n in range(201): print(hmac.new(bytes(range(n)), b'm' * n, hashlib.sha256).hexdigest())\n"
    -- env -u LD_PRELOAD: make check preloads the sanitizer, and Python is not ours to check
    local p = assert(io.popen("env -u LD_PRELOAD /usr/bin/python3 -c \"" .. script .. "\""))
    local lines = {}
    for line in p:lines() do lines[#lines + 1] = line end
    assert(p:close(), "/usr/bin/python3 failed")
    assert(#lines == 402, "python3 printed " .. #lines .. " lines")
    digests, macs = {}, {}
    for n = 0, 200 do
      digests[n] = lines[n + 1]
      macs[n] = lines[n + 202]
    end
  end)

  it("sha256 of ('x'):rep(n) equals hashlib's for n = 0..200", function()
    for n = 0, 200 do
      assert.equal(digests[n], hex(core.sha256(("x"):rep(n))), "n = " .. n)
    end
  end)

  it("hmac_sha256 of bytes 0..n-1, ('m'):rep(n) equals Python's hmac for n = 0..200", function()
    local bytes = {}
    for n = 0, 200 do
      local key = string.char(table.unpack(bytes))
      assert.equal(macs[n], hex(core.hmac_sha256(key, ("m"):rep(n))), "n = " .. n)
      bytes[#bytes + 1] = n % 256
    end
  end)
end)

describe("core.random_bytes", function()
  it("gives exactly n bytes for 0, 1, 32 and 65536", function()
    for _, n in ipairs({ 0, 1, 32, 65536 }) do
      local s = core.random_bytes(n)
      assert.equal("string", type(s))
      assert.equal(n, #s)
    end
  end)

  it("fills the whole buffer: every byte value turns up in 65536 bytes", function()
    -- getrandom may return fewer bytes than asked (a signal, over 256 bytes): a buffer left
    -- partly unfilled would not show all 256 values in its first and last 16 KB.
    local s = core.random_bytes(65536)
    for _, part in ipairs({ s:sub(1, 16384), s:sub(-16384) }) do
      local seen, count = {}, 0
      for i = 1, #part do
        local b = part:byte(i)
        if not seen[b] then seen[b], count = true, count + 1 end
      end
      assert.equal(256, count)
    end
  end)

  it("differs from one call to the next", function()
    assert.not_equal(core.random_bytes(32), core.random_bytes(32))
  end)

  it("refuses a count outside 0..65536, naming it", function()
    raises("bad argument #1 to 'random_bytes' (count must be from 0 to 65536, got 65537)",
      function() core.random_bytes(65537) end)
    raises("bad argument #1 to 'random_bytes' (count must be from 0 to 65536, got -1)",
      function() core.random_bytes(-1) end)
    raises("bad argument #1 to 'random_bytes' (number expected, got no value)", function() core.random_bytes() end)
  end)

  it("gives a forked child bytes of its own, not the parent's", function()
    local r, w = forage.pipe(false)
    local mine = core.random_bytes(32)
    local children = {}
    for i = 1, 2 do
      children[i] = helpers.reaped(finally, forage.process(function()
        w:send(core.random_bytes(32))
      end):start())
    end
    local theirs = { r:recv(WAIT), r:recv(WAIT) }
    for i = 1, 2 do assert.equal(0, helpers.join_or_fail(children[i], WAIT)) end
    local after = core.random_bytes(32)
    for i = 1, 2 do
      assert.equal("string", type(theirs[i]))
      assert.equal(32, #theirs[i])
      assert.not_equal(mine, theirs[i])
      assert.not_equal(after, theirs[i])
    end
    assert.not_equal(theirs[1], theirs[2])
  end)
end)

describe("core.secret_equal", function()
  local a = core.sha256("secret")

  it("is true for equal strings, the empty string included", function()
    assert.is_true(core.secret_equal(a, core.sha256("secret")))
    assert.is_true(core.secret_equal("", ""))
  end)

  it("is false when the first or the last byte differs", function()
    local first = string.char(a:byte(1) ~ 1) .. a:sub(2)
    local last = a:sub(1, -2) .. string.char(a:byte(-1) ~ 0x80)
    assert.is_false(core.secret_equal(a, first))
    assert.is_false(core.secret_equal(a, last))
    assert.is_false(core.secret_equal(first, a))
  end)

  it("is false for different lengths, a prefix included", function()
    assert.is_false(core.secret_equal(a, a:sub(1, 31)))
    assert.is_false(core.secret_equal(a, a .. "\0"))
    assert.is_false(core.secret_equal("", "\0"))
    assert.is_false(core.secret_equal("\0", ""))        -- a Lua string ends in a NUL of its own
    assert.is_false(core.secret_equal("x\0", "x"))
  end)

  it("compares past embedded NULs", function()
    assert.is_true(core.secret_equal("a\0b\0", "a\0b\0"))
    assert.is_false(core.secret_equal("a\0b", "a\0c"))
    assert.is_false(core.secret_equal("\0\0\0x", "\0\0\0y"))
  end)

  it("returns a boolean and refuses numbers", function()
    assert.equal("boolean", type(core.secret_equal("x", "y")))
    raises("bad argument #1 to 'secret_equal' (string expected, got number)", function() core.secret_equal(1, "1") end)
    raises("bad argument #2 to 'secret_equal' (string expected, got number)", function() core.secret_equal("1", 1) end)
  end)
end)
