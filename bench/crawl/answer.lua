-- The crawl benchmark's known answer and the check of a crawler's items against it.
--
-- answer.tsv (written by bench/crawl/site.lua) holds "ID\tNAME|NAME" a line: the directors of
-- every movie, in page order. A crawler's output is JSON Lines, one item per detail page:
-- {"url": ".../detail/ID", "directors": ["NAME", ...]}.

local cjson = require "cjson"

local M = {}

-- The JSON value of a line, or nil when it is not JSON.
function M.decode(line)
  local ok, v = pcall(cjson.decode, line)
  if ok then return v end
  return nil
end

-- Reads an answer file: { [id] = "NAME|NAME" } for ids 1..details.
function M.read(path, details)
  local answer = {}
  for line in io.lines(path) do
    local id, names = line:match("^(%d+)\t(.*)$")
    id = tonumber(id)
    if id and id <= details then answer[id] = names end
  end
  return answer
end

-- Compares a crawler's JSON Lines with the answer for movies 1..details: every movie once,
-- with exactly its directors in page order, and nothing else. Returns true, or false and
-- what is wrong (counts of each fault and the first example).
function M.check(out_file, answer, details)
  local f = io.open(out_file, "rb")
  if not f then return false, "WRONG: no output file" end
  local seen, bad, dup, extra, first_bad = {}, 0, 0, 0, nil
  for line in f:lines() do
    local item = M.decode(line)
    local url = type(item) == "table" and item.url
    local id = type(url) == "string" and tonumber(url:match("/detail/(%d+)$"))
    if not id or id > details or not answer[id] then
      extra = extra + 1
      first_bad = first_bad or ("not a movie of the site: " .. line:sub(1, 80))
    elseif seen[id] then
      dup = dup + 1
    else
      seen[id] = true
      local got = type(item.directors) == "table" and table.concat(item.directors, "|") or "?"
      if got ~= answer[id] then
        bad = bad + 1
        first_bad = first_bad or string.format("movie %d: got '%s', expected '%s'", id, got:sub(1, 80), answer[id])
      end
    end
  end
  f:close()
  local missing, first_missing = 0, nil
  for id = 1, details do
    if not seen[id] then
      missing = missing + 1
      first_missing = first_missing or id
    end
  end
  if bad + dup + extra + missing == 0 then return true end
  return false, string.format("WRONG: %d missing (first %s), %d wrong directors, %d twice, %d not movies%s",
    missing, tostring(first_missing), bad, dup, extra, first_bad and ("; " .. first_bad) or "")
end

return M
