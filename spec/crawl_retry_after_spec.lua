local retry_after = require "forage.crawl.retry_after"

-- RFC 9110's example date, 1994-11-06 08:49:37 UTC, is this epoch (python3's calendar.timegm).
local T = 784111777

describe("forage.crawl.retry_after.seconds", function()
  it("reads delta-seconds", function()
    assert.equal(120, retry_after.seconds("120"))
    assert.equal(0, retry_after.seconds("0"))
    assert.equal(7, retry_after.seconds(" 7 "))
    assert.equal(3, retry_after.seconds(3))
  end)

  it("reads the three HTTP-date forms as the same instant in UTC", function()
    local now = T - 90
    assert.equal(90, retry_after.seconds("Sun, 06 Nov 1994 08:49:37 GMT", now))
    assert.equal(90, retry_after.seconds("Sunday, 06-Nov-94 08:49:37 GMT", now))
    assert.equal(90, retry_after.seconds("Sun Nov  6 08:49:37 1994", now))
  end)

  it("gives 0 for a date in the past, never a negative wait", function()
    assert.equal(0, retry_after.seconds("Sun, 06 Nov 1994 08:49:37 GMT", T + 3600))
  end)

  it("knows leap days and the turn of a year", function()
    assert.equal(951782400, retry_after.http_date("Tue, 29 Feb 2000 00:00:00 GMT"))
    assert.equal(1445412480, retry_after.http_date("Wed, 21 Oct 2015 07:28:00 GMT"))
    assert.equal(1, retry_after.seconds("Thu, 01 Jan 1970 00:00:01 GMT", 0))
    assert.is_nil(retry_after.http_date("Mon, 29 Feb 2001 00:00:00 GMT"))   -- 2001 is not a leap year
  end)

  it("places RFC 850's two-digit year within 50 years of now", function()
    local now2020 = retry_after.http_date("Wed, 01 Jan 2020 00:00:00 GMT")
    assert.equal(retry_after.http_date("Sat, 01 Jan 2000 00:00:00 GMT"),
      retry_after.http_date("Saturday, 01-Jan-00 00:00:00 GMT", now2020))
    -- 2070 is 50 years on: still ahead; 2071 would be more, so "71" is 1971
    assert.equal(retry_after.http_date("Tue, 01 Jan 2070 00:00:00 GMT"),
      retry_after.http_date("Tuesday, 01-Jan-70 00:00:00 GMT", now2020))
    assert.equal(31536000, retry_after.http_date("Friday, 01-Jan-71 00:00:00 GMT", now2020))
  end)

  it("gives nil for garbage", function()
    for _, v in ipairs({ "", "soon", "-5", "1.5", "12abc", "Sun, 06 Nov 1994 08:49:37", "Sun, 32 Nov 1994 08:49:37 GMT",
                         "Sun, 06 Foo 1994 08:49:37 GMT", "Xyz, 06 Nov 1994 08:49:37 GMT",
                         "Sun, 06 Nov 1994 25:49:37 GMT", {}, true }) do
      assert.is_nil(retry_after.seconds(v, T), tostring(v))
    end
    assert.is_nil(retry_after.seconds(0 / 0))
    assert.is_nil(retry_after.seconds(-1))
  end)

  it("raises on a now that is not a number, in Lua's words", function()
    assert.has_error(function() retry_after.seconds("5", "now") end,
      "bad argument #2 to 'seconds' (number expected, got string)")
  end)

  it("is not moved by the local time zone (TZ set in a fresh process)", function()
    local code = [[
      local r = require "forage.crawl.retry_after"
      io.write(r.seconds("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 - 90), " ",
               r.seconds("Sun Nov  6 08:49:37 1994", 784111777 - 90), " ", os.date("%H", 0))
    ]]
    for _, tz in ipairs({ "XST-5:30", "XST+11", "UTC0" }) do
      local cmd = string.format("TZ=%s LUA_PATH='%s' LUA_CPATH='%s' lua5.4 -e '%s' 2>&1", tz, package.path,
        package.cpath, code)
      local pipe = assert(io.popen(cmd))
      local out = pipe:read("a")
      pipe:close()
      local a, b, hour = out:match("^(%S+) (%S+) (%d+)$")
      assert.equal("90", a, out)
      assert.equal("90", b, out)
      -- the zone took effect in that process: the local hour of epoch 0 is not UTC's 00
      assert.equal(({ ["XST-5:30"] = "05", ["XST+11"] = "13", UTC0 = "00" })[tz], hour)
    end
  end)
end)
