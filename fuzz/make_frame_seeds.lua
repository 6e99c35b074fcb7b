-- Writes the seeds of fuzz/frame_fuzz: lua5.4 make_frame_seeds.lua DIR (make -C fuzz seeds-frame).
-- A seed is what frame_fuzz reads: a byte picking max_frame (16 << (b % 12)), a byte picking the
-- chunk size (1 + b % 64), then the bytes a client sends: frames of a 4-byte little-endian length
-- and a payload. Requests are shaped as forage.manager.protocol's header says.
local forage = require "forage"
local protocol = require "forage.manager.protocol"
local dir = assert(arg[1], "usage: make_frame_seeds.lua DIR")

local MAX_4K, MAX_16 = 8, 0   -- 16 << 8 = 4096 bytes, 16 << 0 = 16 bytes

local function frame(payload)
  return string.pack("<I4", #payload) .. payload
end

-- A seed of the given limit and chunk size from frames (strings: bytes already framed or not).
local function stream(max_byte, chunk_byte, frames)
  return string.char(max_byte, chunk_byte) .. table.concat(frames)
end

local function request(v)
  return frame(forage.encode(v))
end

local ref = { [protocol.REF] = 7, t = "dict" }

local valid = {
  request { 0, "create", 2, "dict", { a = 1, b = { 1, 2, 3 } } },
  request { 7, "get", 1, "a" },
  request { 7, "update", 1, { c = "x", [2] = 2.5 } },
  request { 3, "put", 2, "k", ref, r = true },
  request { 7, "keys", 0 },
  request { 0, "shutdown", 0 },
}

-- A deterministic stand-in for random bytes: the seeds stay the same across runs.
local function garbage(n, seed)
  local bytes, x = {}, seed
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    bytes[i] = string.char(x >> 16 & 0xff)
  end
  return table.concat(bytes)
end

local seeds = {
  -- Whole requests, read 64 bytes at a time and one byte at a time.
  requests = stream(MAX_4K, 63, valid),
  requests_bytewise = stream(MAX_4K, 0, { valid[1], valid[4], valid[6] }),
  -- Frames that decode but that check_request refuses, then one it takes.
  refused = stream(MAX_4K, 31, {
    request { 0, "_secret", 0 },
    request { -1, "get", 0 },
    request { 7, "get", 251 },
    request { 7, "get", 1, "a", "stray" },
    request { 7, "get", 0, r = false },
    request { 7, ("m"):rep(65), 0 },
    request { 7, "no such-name", 0 },
    request "hello",
    request { "forage-manager", 1, "x" },
    request { "hello", protocol.VERSION, ("m"):rep(32), ("c"):rep(32) },
    valid[2],
  }),
  -- A frame within the limit, then one over it (16 bytes): the server closes there.
  over_limit = stream(MAX_16, 7, { request { 0, "ping", 0 }, valid[1], valid[2] }),
  -- A header announcing more than FRAME_MAX.
  huge_header = stream(MAX_4K, 63, { valid[2], "\xff\xff\xff\xff", garbage(32, 1) }),
  -- The stream ends inside a frame: its header says more than follows.
  truncated = stream(MAX_4K, 15, { valid[2], valid[1]:sub(1, 20) }),
  -- A whole frame that does not decode (recv's "malformed": the connection stays), then a
  -- request; and bytes that are no frames at all.
  malformed = stream(MAX_4K, 9, { frame(garbage(40, 2)), frame "", frame "\1", valid[5] }),
  garbage = stream(MAX_4K, 63, { garbage(200, 3) }),
}

for name, bytes in pairs(seeds) do
  assert(#bytes < 1024, name .. " is over 1 KB")
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(bytes)
  f:close()
end
