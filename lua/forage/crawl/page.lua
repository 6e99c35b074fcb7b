-- The page a callback receives, in a worker: the response, its request's data, selectors
-- on a document parsed once on first use (and freed when the callback returns), and the
-- two ways a callback gives work back: follow (new requests) and emit (items).
local forage = require "forage"
local args = require "forage.args"

local M = {}

local url_lib = forage.url

local Page = {}
Page.__index = Page

-- An error that stops the whole crawl (exit 2): a follow to a callback the spider lacks.
local Fatal = {}
Fatal.__index = Fatal
Fatal.__tostring = function(e) return e.message end
M.Fatal = Fatal

-- True when the body looks like HTML or XML (by its content-type, or by sniffing when there
-- is none): xpath/css on anything else give empty lists.
local function is_markup(page)
  local ctype = page.headers["content-type"]
  if ctype then
    ctype = ctype:lower()
    return ctype:find("html", 1, true) or ctype:find("xml", 1, true) or ctype:find("^text/plain") ~= nil
  end
  return page.body:sub(1, 512):find("<%a") ~= nil
end

-- The parsed document, or false for a body that is not markup.
local function document(page)
  local doc = rawget(page, "_doc")
  if doc == nil then
    doc = false
    if is_markup(page) then doc = forage.html.parse(page.body, page.url) or false end
    rawset(page, "_doc", doc)
  end
  return doc
end

function Page:xpath(expr)
  local doc = document(self)
  if not doc then return {} end
  return doc:xpath(expr)
end

function Page:css(selector)
  local doc = document(self)
  if not doc then return {} end
  return doc:css(selector)
end

-- Absolute, de-duplicated http(s) links of the page's a[href].
function Page:links()
  local doc = document(self)
  if not doc then return {} end
  return doc:links()
end

-- The absolute URL of href on this page, or nil, message for one that is not a URL.
function Page:urljoin(href)
  return url_lib.join(self.url, href)
end

local FOLLOW_OPTIONS = { meta = true, priority = true, dont_filter = true, headers = true, method = true, body = true }

local function bad_follow(key, what, v)
  error(string.format("follow: option '%s' must be %s, got %s", key, what, args.show(v)), 4)
end

-- Raises (in the callback: the page fails with the message) on options the request could
-- not be sent with, rather than letting the worker find out.
local function check_follow_options(opts)
  if type(opts) ~= "table" then
    error(string.format("bad argument #3 to 'follow' (table expected, got %s)", type(opts)), 3)
  end
  args.options("follow", opts, FOLLOW_OPTIONS, 3)
  local m = opts.method
  if m ~= nil and (type(m) ~= "string" or not m:match("^[%w!#$%%&'*+.^_`|~-]+$")) then
    bad_follow("method", "an HTTP method token", m)
  end
  if opts.body ~= nil and type(opts.body) ~= "string" then bad_follow("body", "a string", opts.body) end
  if opts.priority ~= nil and math.type(opts.priority) ~= "integer" then
    bad_follow("priority", "an integer", opts.priority)
  end
  if opts.dont_filter ~= nil and type(opts.dont_filter) ~= "boolean" then
    bad_follow("dont_filter", "a boolean", opts.dont_filter)
  end
  if opts.headers ~= nil then
    if type(opts.headers) ~= "table" then bad_follow("headers", "a table of name = value", opts.headers) end
    for name, value in pairs(opts.headers) do
      if type(name) ~= "string" or not name:match("^[%w!#$%%&'*+.^_`|~-]+$") then
        bad_follow("headers", "a table of header names to values", name)
      end
      if type(value) ~= "string" or value:find("[\r\n%z]") then
        bad_follow("headers", "values without line breaks or NUL bytes", value)
      end
    end
  end
end

local function follow_one(self, href, callback, opts)
  local ctx = self._ctx
  if type(href) == "table" and href.attr then href = href:attr("href") end   -- a node: its href
  if type(href) ~= "string" then
    ctx.stats.skipped_links = ctx.stats.skipped_links + 1
    return false
  end
  local absolute = url_lib.join(self.url, href)
  local scheme = absolute and absolute:match("^(%a[%w+.-]*):")
  scheme = scheme and scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then
    ctx.stats.skipped_links = ctx.stats.skipped_links + 1
    return false
  end
  return ctx.add_request(self, absolute, callback, opts)
end

-- page:follow(href_or_list, callback_name [, opts]) -> the number of requests made.
-- A href that is not an http(s) URL (javascript:, mailto:, garbage) is skipped and counted.
function Page:follow(hrefs, callback, opts)
  local ctx = self._ctx
  if type(callback) ~= "string" then
    error(string.format("bad argument #2 to 'follow' (callback name expected, got %s)", type(callback)), 2)
  end
  if not ctx.callbacks[callback] then
    error(setmetatable({ message = string.format("follow: the spider has no callback '%s' (from %s)",
      callback, self.url) }, Fatal), 2)
  end
  if opts ~= nil then check_follow_options(opts) end
  local n = 0
  if type(hrefs) == "table" and not hrefs.attr then
    for _, href in ipairs(hrefs) do
      if follow_one(self, href, callback, opts) then n = n + 1 end
    end
  elseif follow_one(self, hrefs, callback, opts) then
    n = 1
  end
  return n
end

-- page:emit(item): an item for the pipelines and the output.
function Page:emit(item)
  if type(item) ~= "table" then
    error(string.format("bad argument #1 to 'emit' (table expected, got %s)", type(item)), 2)
  end
  local items = self._ctx.items
  items[#items + 1] = item
end

-- Frees the document (the callback has returned).
function M.close(page)
  local doc = rawget(page, "_doc")
  if doc then doc:close() end
  rawset(page, "_doc", false)
end

-- A page for response r of request req; ctx: { callbacks, stats, items, add_request }.
function M.new(req, r, ctx, proxy_masked)
  return setmetatable({
    url = r.url or req.url,
    request_url = req.url,
    status = r.status,
    headers = r.headers or {},
    body = r.body or "",
    meta = req.meta or {},
    depth = req.depth or 0,
    callback = req.callback,
    proxy = proxy_masked,
    elapsed = r.elapsed,
    from_cache = r.from_cache or false,
    _ctx = ctx,
  }, Page)
end

return M
