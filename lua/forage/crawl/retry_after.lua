-- Retry-After (RFC 9110 section 10.2.3): delta-seconds or an HTTP-date, turned into a
-- number of seconds to wait. Dates are read in UTC by arithmetic, never through os.time,
-- which reads a broken-down time as local time (the TZ bug this module exists to avoid).
local args = require "forage.args"

local M = {}

local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6, jul = 7, aug = 8, sep = 9, oct = 10,
                 nov = 11, dec = 12 }
local DAYS = { mon = true, tue = true, wed = true, thu = true, fri = true, sat = true, sun = true }
local LONG_DAYS = { monday = true, tuesday = true, wednesday = true, thursday = true, friday = true,
                    saturday = true, sunday = true }

-- Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard Hinnant's
-- days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local function leap(y) return y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0) end
local MONTH_DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

-- Seconds since the epoch of a UTC calendar time, or nil when a field is out of range.
-- Exported for forage.crawl.cookies, whose lenient date reader ends here too.
function M.epoch(y, mon, d, h, mi, s)
  if not (y and mon and d and h and mi and s) then return nil end
  if mon < 1 or mon > 12 or d < 1 or h > 23 or mi > 59 or s > 60 then return nil end
  local last = MONTH_DAYS[mon] + ((mon == 2 and leap(y)) and 1 or 0)
  if d > last then return nil end
  return days_from_civil(y, mon, d) * 86400 + h * 3600 + mi * 60 + s
end

local function int(s) return s and math.tointeger(tonumber(s, 10)) end

-- A two-digit year of RFC 850, read as RFC 9110 says: a year more than 50 years in the
-- future is in the past century.
local function full_year(yy, now)
  local this_year = int(os.date("!%Y", now))
  local y = (this_year // 100) * 100 + yy
  if y > this_year + 50 then y = y - 100 end
  return y
end

-- Seconds since the epoch of an HTTP-date in one of its three forms (IMF-fixdate,
-- RFC 850, asctime), or nil. `now` only places RFC 850's two-digit year.
function M.http_date(s, now)
  if type(s) ~= "string" then return nil end
  s = s:match("^%s*(.-)%s*$")
  -- IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
  local wd, d, mon, y, h, mi, sec = s:match("^(%a%a%a), (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if wd then
    if not DAYS[wd:lower()] then return nil end
    return M.epoch(int(y), MONTHS[mon:lower()], int(d), int(h), int(mi), int(sec))
  end
  -- RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
  wd, d, mon, y, h, mi, sec = s:match("^(%a+), (%d%d)%-(%a%a%a)%-(%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if wd then
    if not LONG_DAYS[wd:lower()] then return nil end
    return M.epoch(full_year(int(y), now or os.time()), MONTHS[mon:lower()], int(d), int(h), int(mi), int(sec))
  end
  -- asctime: Sun Nov  6 08:49:37 1994
  wd, mon, d, h, mi, sec, y = s:match("^(%a%a%a) (%a%a%a) ([ %d]%d) (%d%d):(%d%d):(%d%d) (%d%d%d%d)$")
  if wd then
    if not DAYS[wd:lower()] then return nil end
    return M.epoch(int(y), MONTHS[mon:lower()], int(d:match("%d+")), int(h), int(mi), int(sec))
  end
  return nil
end

-- seconds(value [, now_epoch]) -> seconds >= 0 to wait, or nil for a value that is
-- neither delta-seconds nor an HTTP-date. A date in the past gives 0.
function M.seconds(value, now)
  args.check(2, now, "number", "seconds", 2, true)
  if type(value) == "number" then
    if value ~= value or value < 0 or value == math.huge then return nil end
    return value
  end
  if type(value) ~= "string" then return nil end
  local digits = value:match("^%s*(%d+)%s*$")
  if digits then return tonumber(digits) end
  now = now or os.time()
  local t = M.http_date(value, now)
  if not t then return nil end
  return math.max(0, t - now)
end

return M
