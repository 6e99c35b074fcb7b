-- forage shell [URL_OR_FILE]: fetch once, then a Lua prompt with the page bound, as
-- `scrapy shell` gives: trying ten selectors costs one request.
local page_loader = require "forage.cli.page"

local M = {
  summary = "Fetch a page once, then try selectors on it at a Lua prompt.",
  description = "Fetch a page once (or read a saved one), then read Lua from stdin with `page` bound:\n"
    .. "page.url, page.status, page.headers, page.body, page:xpath(e), page:css(s), page:links(),\n"
    .. "page:urljoin(ref); fetch(url) loads another page into `page`; exit() or Ctrl-D leaves.\n"
    .. "Expressions print their values, statements run, errors print and the prompt goes on.\n"
    .. "The prompt and banner show only when stdin is a terminal; a pipe of commands works too.",
}

function M.configure(command)
  command:argument("url_or_file", "An http:// or https:// URL, a file:// URL, or the path of a saved page."):args("?")
  page_loader.configure(command)
end

local MAX_ITEMS, MAX_NESTED_STRING = 100, 200

-- A readable form of v for the prompt: strings quoted inside tables, nodes as their HTML.
local function render(v, depth, nested)
  local t = type(v)
  if t == "string" then
    if not nested then return v end
    local cut = #v > MAX_NESTED_STRING
    local quoted = string.format("%q", cut and v:sub(1, MAX_NESTED_STRING) or v):gsub("\\\n", "\\n")
    return quoted .. (cut and "..." or "")
  elseif t == "userdata" and (getmetatable(v) or {}).__name == "forage.Node" then
    local html = v:html()
    if nested and #html > MAX_NESTED_STRING then html = html:sub(1, MAX_NESTED_STRING) .. "..." end
    return html
  elseif t ~= "table" or getmetatable(v) and getmetatable(v).__tostring then
    return tostring(v)
  elseif depth > 2 then
    return "{...}"
  end
  local parts = {}
  for i = 1, math.min(#v, MAX_ITEMS) do parts[#parts + 1] = render(v[i], depth + 1, true) end
  if #v > MAX_ITEMS then parts[#parts + 1] = string.format("... (%d more)", #v - MAX_ITEMS) end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= #v) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for i, k in ipairs(keys) do
    if #parts >= MAX_ITEMS then
      parts[#parts + 1] = string.format("... (%d more)", #keys - i + 1)
      break
    end
    local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. render(k, depth + 1, true) .. "]"
    parts[#parts + 1] = key .. " = " .. render(v[k], depth + 1, true)
  end
  if #parts == 0 then return "{}" end
  local line = "{ " .. table.concat(parts, ", ") .. " }"
  if #line <= 100 then return line end
  local indent = ("  "):rep(depth + 1)
  return "{\n" .. indent .. table.concat(parts, ",\n" .. indent) .. "\n" .. ("  "):rep(depth) .. "}"
end

-- True when stdin is a terminal (no isatty in plain Lua; test(1) asks on the same stdin).
local function stdin_is_terminal()
  return os.execute("test -t 0") == true
end

local Exit = {}

-- The environment the prompt's chunks run in: globals, plus page, fetch and exit.
local function make_env(options)
  local env = setmetatable({}, { __index = _G })
  env.forage = require "forage"
  -- fetch(url) loads url (relative to the current page's) into `page` and returns it;
  -- nil, message, kind when it fails, and `page` stays as it was.
  env.fetch = function(target)
    if type(target) ~= "string" then
      error(string.format("bad argument #1 to 'fetch' (string expected, got %s)", type(target)), 2)
    end
    local current = rawget(env, "page")
    if current and not target:match("^%a[%w+.-]*:") then
      target = current:urljoin(target) or target
    end
    local page, message, kind = page_loader.load(target, options)
    if not page then return nil, message, kind end
    env.page = page
    return page
  end
  env.exit = function(code)
    error(setmetatable({ code = code }, Exit), 0)
  end
  return env
end

-- The chunk for the lines read so far: an expression first (its values print), else a
-- statement. Returns the function, or nil and the error, with incomplete = true when more
-- lines could finish it.
local function compile(source, env)
  local fn = load("return " .. source, "=stdin", "t", env)
  if fn then return fn end
  local err
  fn, err = load(source, "=stdin", "t", env)
  if fn then return fn end
  return nil, err, err:sub(-5) == "<eof>"
end

-- Runs fn; prints its values on stdout, or its error on stderr. Returns an exit code when
-- the chunk called exit().
local function run_chunk(fn)
  local results = table.pack(xpcall(fn, function(err)
    if getmetatable(err) == Exit then return err end
    return require("forage.cli").clean_error(err)
  end))
  if not results[1] then
    local err = results[2]
    if getmetatable(err) == Exit then
      local code = err.code
      if code == false then return 1 end
      return math.type(code) == "integer" and code or 0
    end
    io.stderr:write(tostring(err), "\n")
    return nil
  end
  if results.n > 1 then
    local shown = {}
    for i = 2, results.n do shown[#shown + 1] = render(results[i], 0, false) end
    io.stdout:write(table.concat(shown, "\t"), "\n")
  end
  io.stdout:flush()
  return nil
end

-- Reads chunks from stdin until Ctrl-D (end of input) or exit(); returns the exit code.
local function repl(env, interactive)
  local pending
  while true do
    if interactive then
      io.stdout:write(pending and ">> " or "> ")
      io.stdout:flush()
    end
    local line = io.stdin:read("l")
    if line == nil then
      if pending then
        local _, err = compile(pending, env)
        io.stderr:write(err, "\n")
      end
      if interactive then io.stdout:write("\n") end
      return 0
    end
    local source = pending and pending .. "\n" .. line or line
    local fn, err, incomplete = compile(source, env)
    pending = nil
    if fn then
      local code = run_chunk(fn)
      if code then return code end
    elseif incomplete then
      pending = source
    else
      io.stderr:write(err, "\n")
    end
  end
end

function M.run(parsed, cli)
  local options, bad = page_loader.http_options(parsed)
  if not options then return cli.fail(cli.USAGE, bad) end
  local interactive = stdin_is_terminal()
  local env = make_env(options)
  if parsed.url_or_file then
    local page, code = page_loader.load_or_fail(parsed.url_or_file, options, cli)
    if not page then return code end
    env.page = page
  end
  if interactive then
    io.stdout:write("forage ", env.forage.version, " shell. ",
      env.page and ("page = " .. tostring(env.page)) or "No page yet: fetch(url)", "\n",
      "  page.url page.status page.headers page.body\n",
      "  page:xpath(expr)  page:css(selector)  page:links()  page:urljoin(ref)\n",
      "  fetch(url) loads another page into page; exit() or Ctrl-D leaves.\n")
  end
  return repl(env, interactive)
end

return M
