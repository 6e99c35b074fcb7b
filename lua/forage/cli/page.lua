-- The page `forage fetch` prints and `forage shell` binds: fetched over http(s) by
-- forage.http, or read from a local file (a path or a file:// URL). Reading files is the
-- command line's business only: the library's http stays http/https, so a page of a crawl
-- can never make it read the disk.
local forage = require "forage"
local args = require "forage.args"
local show = args.show

local M = {}

-- Reason phrases for the status line `--headers` prints; forage.http gives the number only.
local REASONS = {
  [100] = "Continue", [101] = "Switching Protocols",
  [200] = "OK", [201] = "Created", [202] = "Accepted", [203] = "Non-Authoritative Information",
  [204] = "No Content", [205] = "Reset Content", [206] = "Partial Content",
  [300] = "Multiple Choices", [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [304] = "Not Modified", [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [406] = "Not Acceptable",
  [407] = "Proxy Authentication Required", [408] = "Request Timeout", [409] = "Conflict", [410] = "Gone",
  [411] = "Length Required", [412] = "Precondition Failed", [413] = "Payload Too Large",
  [414] = "URI Too Long", [415] = "Unsupported Media Type", [416] = "Range Not Satisfiable",
  [417] = "Expectation Failed", [418] = "I'm a teapot", [421] = "Misdirected Request",
  [422] = "Unprocessable Entity", [425] = "Too Early", [426] = "Upgrade Required",
  [428] = "Precondition Required", [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
  [451] = "Unavailable For Legal Reasons",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
  [507] = "Insufficient Storage", [511] = "Network Authentication Required",
}

-- "HTTP/1.1 200 OK", as `curl -i` starts; nil for a local file, which has no status.
function M.status_line(page)
  if page.status == nil then return nil end
  local reason = page.reason or REASONS[page.status]
  return string.format("HTTP/%s %d%s", page.http_version or "1.1", page.status, reason and " " .. reason or "")
end

-- Adds the options that shape a request, shared by fetch and shell.
function M.configure(command)
  command:option("-H --header", "Send a header, 'Name: value' (repeatable).")
    :count("*"):argname("HEADER")
  command:option("-A --user-agent", "The User-Agent header (default forage/" .. forage.version .. ").")
    :argname("AGENT")
  command:option("--proxy", "An http://, https://, socks5:// or socks5h:// proxy; user:pass@ allowed.")
    :argname("URL")
  command:option("--timeout", "Give up on a fetch after SECONDS (default 30).")
    :argname("SECONDS"):convert(function(s)
      local n = tonumber(s)
      if not n or n ~= n or n < 0 then return nil, "--timeout takes a number of seconds >= 0, got " .. show(s) end
      return n
    end)
  command:flag("--no-follow", "Do not follow redirects: the page is the first response.")
  command:flag("--insecure", "Do not verify TLS certificates (say so when you use it).")
end

-- The forage.http options for the parsed command line; nil and a message when a -H is not
-- 'Name: value' or holds a line break.
function M.http_options(parsed)
  local headers, agent = {}, parsed.user_agent or ("forage/" .. forage.version)
  for _, line in ipairs(parsed.header or {}) do
    local name, value = line:match("^([!#$%%&'*+%-.^_`|~%w]+):%s*(.-)%s*$")
    if not name or value:find("[\r\n]") then
      return nil, "-H wants 'Name: value' on one line, got " .. show(line)
    end
    if name:lower() == "user-agent" then agent = nil end
    headers[#headers + 1] = name .. ": " .. value
  end
  if agent then
    if agent:find("[\r\n]") then return nil, "-A wants one line, got " .. show(agent) end
    headers[#headers + 1] = "User-Agent: " .. agent
  end
  return {
    headers = headers,
    proxy = parsed.proxy,
    timeout = parsed.timeout,
    follow = parsed.no_follow and 0 or nil,
    insecure = parsed.insecure or nil,
  }
end

local Page = {}
Page.__index = Page

-- The parsed document, made on the first query and kept out of the page's fields.
local documents = setmetatable({}, { __mode = "k" })

-- Runs doc[method](doc, arg) and re-raises its error at the caller of the page method
-- without forage's file names.
local function query(page, method, arg)
  local doc = documents[page]
  if not doc then
    doc = forage.html.parse(page.body, page.url)
    documents[page] = doc
  end
  local ok, result = pcall(doc[method], doc, arg)
  if not ok then error(require("forage.cli").clean_error(result), 3) end
  return result
end

-- page:xpath(expr) -> the list doc:xpath gives (nodes, strings, or the one value of count()).
-- (Not tail calls: query's error level counts this frame.)
function Page:xpath(expr)
  local found = query(self, "xpath", expr)
  return found
end

-- page:css(selector) -> as page:xpath, for a CSS selector (with ::text and ::attr(name)).
function Page:css(selector)
  local found = query(self, "css", selector)
  return found
end

-- page:links() -> the page's absolute link URLs, in order, without duplicates.
function Page:links()
  local found = query(self, "links")
  return found
end

-- page:urljoin(ref) -> ref made absolute against the page's URL (nil, message when it cannot).
function Page:urljoin(ref)
  args.check(1, ref, "string", "urljoin")
  return forage.url.join(self.url, ref)
end

-- tostring(page) -> "<200 http://...>" as Scrapy prints a response, "<file:///...>" for a file.
function Page:__tostring()
  if self.status then return string.format("<%d %s>", self.status, self.url) end
  return "<" .. self.url .. ">"
end

-- True when target names something fetched over the network or a file:// URL (it has a
-- scheme); anything else is a local path.
local function has_scheme(target)
  return target:match("^%a[%w+.-]*://") ~= nil
end

local function percent_decode(s)
  return (s:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

local function percent_encode_path(path)
  return (path:gsub("[^%w%-._~/!$&'()*+,;=:@]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- The absolute file:// URL of a path (relative paths against $PWD, which the shell keeps).
local function file_url(path)
  if path:sub(1, 1) ~= "/" then
    local cwd = os.getenv("PWD")
    if not cwd then
      local p = io.popen("pwd")
      cwd = p and p:read("l")
      if p then p:close() end
    end
    path = (cwd or ".") .. "/" .. path:gsub("^%./", "")
  end
  return "file://" .. percent_encode_path(path)
end

-- The reason of an io.open failure on path, without the path io.open puts in front.
function M.reason(err, path)
  local reason = tostring(err)
  if reason:sub(1, #path + 2) == path .. ": " then reason = reason:sub(#path + 3) end
  return reason
end

-- Reads the local file path; returns a page or nil, message, "file".
local function read_file(path, url)
  local f, err = io.open(path, "rb")
  local body
  if f then
    body, err = f:read("a")
    f:close()
  end
  if not body then
    return nil, "cannot read " .. show(path) .. ": " .. M.reason(err, path), "file"
  end
  return setmetatable({ url = url or file_url(path), headers = { ["content-length"] = tostring(#body) },
                        body = body }, Page)
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- The local path of a file:// URL, or nil and a message.
local function file_path(url)
  local rest = url:sub(8)
  local host, path = rest:match("^([^/]*)(/.*)$")
  if not host or (host ~= "" and host:lower() ~= "localhost") then
    return nil, "a file:// URL names a local path (file:///path), got " .. show(url)
  end
  return percent_decode(path:gsub("[?#].*$", ""))
end

-- Loads target (an http(s) URL, a file:// URL or a local path) with the forage.http options;
-- returns a page, or nil, message, kind (forage.http's kinds, "file" for an unreadable file,
-- "malformed" for a bad file:// URL). Raises what forage.http raises on a bad option.
function M.load(target, options)
  if not has_scheme(target) then
    local page, message, kind = read_file(target)
    -- "example.com/x" is more likely a URL without its scheme than a missing file
    if not page and not target:find("^[/.]") and not exists(target:match("^[^/]*")) then
      message = message .. " (a URL starts with http:// or https://)"
    end
    return page, message, kind
  end
  local scheme = target:match("^(%a[%w+.-]*):"):lower()
  if scheme ~= "http" and scheme ~= "https" and scheme ~= "file" then
    return nil, "forage reads http://, https:// and file:// URLs, got " .. show(target), "malformed"
  end
  if scheme == "file" then
    local path, err = file_path(target)
    if not path then return nil, err, "malformed" end
    return read_file(path, target)
  end
  local response, err, kind = forage.http.get(target, options)
  if not response then
    kind = kind or (type(err) == "table" and err.kind) or "http"
    local message = type(err) == "table" and err.message or tostring(err)
    -- the kind is said once, by whoever prints it
    if message:sub(1, #kind + 2) == kind .. ": " then message = message:sub(#kind + 3) end
    return nil, message, kind
  end
  return setmetatable({ url = response.url, status = response.status, headers = response.headers,
                        body = response.body, reason = response.reason,
                        http_version = response.http_version }, Page)
end

-- M.load for a command: the page, or nil and the exit code after saying why on stderr
-- (2 for what the command line got wrong: a bad option value, a malformed URL).
function M.load_or_fail(target, options, cli)
  local ok, page, message, kind = pcall(M.load, target, options)
  if not ok then return nil, cli.fail(cli.USAGE, cli.clean_error(page)) end
  if page then return page end
  if kind == "file" then return nil, cli.fail(cli.FAILED, message) end
  if kind == "malformed" then return nil, cli.fail(cli.USAGE, "bad URL: " .. message) end
  return nil, cli.fail(cli.FAILED, string.format("fetch failed (%s): %s", kind, message))
end

-- The page's URL for a message: at most 60 bytes, and no user:password@ part.
function M.url_for_message(page)
  return show((page.url:gsub("^(%a[%w+.-]*://)[^/?#]*@", "%1")))
end

-- True when the page counts as fetched: a 2xx status, or a local file.
function M.ok(page)
  return page.status == nil or (page.status >= 200 and page.status < 300)
end

return M
