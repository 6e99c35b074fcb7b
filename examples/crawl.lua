-- A list -> detail crawl, as the blog's does on its practice site, against a small site
-- this script serves itself on 127.0.0.1 (in a forked process, with LuaSocket), so it
-- runs anywhere: list pages link to movies, each movie page names its directors.
-- Workers fetch with forage.http and parse with forage.html; the parent chains list pages
-- into detail pages from the callbacks, and pool:drain() says when all is done.
-- Run: eval "$(make -s env)"; lua5.4 examples/crawl.lua
local forage = require "forage"
local socket = require "socket"

local PAGES, PER_PAGE = 3, 4

-- The site: /page/N lists movies, /detail/N names the director of movie N.
local function page_for(path)
  local n = tonumber(path:match("^/page/(%d+)$"))
  if n and n >= 1 and n <= PAGES then
    local items = {}
    for i = (n - 1) * PER_PAGE + 1, n * PER_PAGE do
      items[#items + 1] = ('<div class="el-card"><a class="name" href="/detail/%d"><h2>Movie %d</h2></a></div>')
        :format(i, i)
    end
    return 200, "<html><body>" .. table.concat(items) .. "</body></html>"
  end
  n = tonumber(path:match("^/detail/(%d+)$"))
  if n then
    return 200, ('<html><body><h2>Movie %d</h2><div class="directors el-row">' ..
      '<p>\n  Director %s\n</p></div></body></html>'):format(n, string.char(64 + n))
  end
  return 404, "<html><body>not found</body></html>"
end

local function serve(server)
  while true do
    local client = server:accept()
    if client then
      client:settimeout(5)
      local request = client:receive("*l") or ""
      repeat local line = client:receive("*l") until line == nil or line == ""
      local status, body = page_for(request:match("^GET (%S+)") or "/")
      client:send(("HTTP/1.1 %d %s\r\nContent-Type: text/html\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s")
        :format(status, status == 200 and "OK" or "Not Found", #body, body))
      client:close()
    end
  end
end

local server = assert(socket.bind("127.0.0.1", 0))
local _, port = server:getsockname()
local site = forage.process(serve, server):start()
server:close()                                    -- the site's process has its own copy
local base = "http://127.0.0.1:" .. port

-- Tasks: they run in the workers. scrape(url, xpath) fetches a page and returns what the
-- XPath finds in it, and the page's final URL.
local function scrape(url, xpath)
  local r, err = forage.http.get(url, { timeout = 10 })
  if not r then error("fetch " .. url .. ": " .. tostring(err)) end
  if r.status ~= 200 then error("fetch " .. url .. ": status " .. r.status) end
  local doc <close> = forage.html.parse(r.body, r.url)
  return doc:xpath(xpath), r.url
end

local function list_page(url)
  local hrefs, final_url = scrape(url, '//a[@class="name"]/@href')
  for i, href in ipairs(hrefs) do hrefs[i] = forage.url.join(final_url, href) end
  return hrefs
end

local function detail_page(url)
  local directors = scrape(url, '//div[@class="directors el-row"]//p/text()')
  for i, text in ipairs(directors) do directors[i] = text:match("^%s*(.-)%s*$") end
  return url .. "," .. table.concat(directors, "|")
end

local rows, failures = {}, {}
local function crawl()
  local pool <close> = forage.pool(4)
  local function failed(e) failures[#failures + 1] = tostring(e) end
  for page = 1, PAGES do
    pool:apply_async(list_page, { base .. "/page/" .. page }, {
      on_done = function(urls)                    -- in the parent: chain the detail pages
        for _, url in ipairs(urls) do
          pool:apply_async(detail_page, { url }, { on_done = function(row) rows[#rows + 1] = row end,
                                                   on_error = failed })
        end
      end,
      on_error = failed,
    })
  end
  assert(pool:drain(60), "the crawl did not finish in 60 s")
end
local ok, err = pcall(crawl)
site:terminate()                                  -- stop the site, whatever happened
site:join()
print(("the site (pid %d) is stopped"):format(site.pid))
if not ok then error(err, 0) end

table.sort(rows, function(a, b) return tonumber(a:match("/detail/(%d+)")) < tonumber(b:match("/detail/(%d+)")) end)
for _, row in ipairs(rows) do print(row:sub(#base + 1)) end
print(string.format("collected %d detail pages from %d list pages, %d failures", #rows, PAGES, #failures))
for _, f in ipairs(failures) do print("failed:", f) end
os.exit(#failures == 0 and #rows == PAGES * PER_PAGE)
