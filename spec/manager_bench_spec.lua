-- The managers section of `make bench` (bench/manager_bench.lua, issue 11) on tiny sizes:
-- each forage and Python measurement runs in its own process, as in `make bench`, and
-- reports the work it was given, done right (every read returned what was written, the
-- consumer got every message, in order). The speeds are for `make bench`; nothing here is timed.
package.path = "bench/?.lua;" .. package.path
local h = require "harness"
h.dir = "bench" -- the harness takes its directory from arg[0], busted's here
h.lua = "lua5.4"
local section = require "manager_bench"

local N = 40

local function forage_trial(name, n)
  return h.trial { h.lua, "bench/manager_bench.lua", name, tostring(n) }
end

-- env -u LD_PRELOAD: make check preloads the sanitizer, and Python is not ours to check
local function python_trial(name, n)
  return h.trial { "env", "-u", "LD_PRELOAD", h.python, "bench/manager_peer.py", name, tostring(n) }
end

local function assert_rate(r, units)
  assert.is_true(r.seconds > 0, "seconds " .. tostring(r.seconds))
  assert.near(units / r.seconds, r.rate, 1e-6 * r.rate)
end

for _, side in ipairs { { "forage", forage_trial }, { "python", python_trial } } do
  local who, trial = side[1], side[2]

  describe("the managers bench, " .. who .. " side", function()
    it("dict_roundtrip: N writes, each read back with what was written, counted as 2N round trips", function()
      local r, err = trial("dict_roundtrip", N)
      assert.is_table(r, err)
      assert.equal("dict_roundtrip", r.bench)
      assert.equal(N, r.n)
      assert.equal(2 * N, r.round_trips)
      assert.equal(N, r.reads_checked)
      assert_rate(r, 2 * N)
    end)

    it("queue_remote: the consumer gets exactly the producer's N messages, in order", function()
      local r, err = trial("queue_remote", N)
      assert.is_table(r, err)
      assert.equal("queue_remote", r.bench)
      assert.equal(N, r.n)
      assert.equal(N, r.received)
      assert.equal(N, r.in_order)
      assert_rate(r, N)
    end)

    it("fails a run asked for a measurement it does not have, naming the ones it has", function()
      local r, err = trial("no_such_bench", N)
      assert.is_nil(r)
      assert.truthy(err:find("dict_roundtrip", 1, true), err)
      assert.truthy(err:find("queue_remote", 1, true), err)
    end)
  end)
end

describe("the managers bench's rows", function()
  it("are one a measurement, with both figures, a ratio, the issue's 5x target and the runs", function()
    local rounds = h.rounds
    h.rounds = 1
    finally(function() h.rounds = rounds end)
    local rows = section(h, { dict = N, queue = N })
    assert.equal(2, #rows)
    assert.truthy(rows[1].name:find("dict: " .. N .. " x", 1, true), rows[1].name)
    assert.truthy(rows[2].name:find("remote queue: " .. N .. " x", 1, true), rows[2].name)
    for _, row in ipairs(rows) do
      assert.is_nil(row.err, row.err)
      assert.truthy(row.forage:match("^[%d,]+/s$"), row.forage)
      assert.truthy(row.peer:match("^[%d,]+/s$"), row.peer)
      assert.is_true(row.ratio > 0)
      assert.equal(5, row.target)
      assert.equal(row.ratio >= 5, row.pass)
      assert.truthy(row.notes[#row.notes]:match("^runs: forage [%d,]+/s | python [%d,]+/s$"), row.notes[#row.notes])
    end
  end)
end)
