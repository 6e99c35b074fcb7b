-- forage fetch URL_OR_FILE: one page, printed whole or through an XPath or CSS selector,
-- to try a page and a selector before a spider is written.
local page_loader = require "forage.cli.page"
local show = require("forage.args").show

local M = {
  summary = "Fetch one page (or read a saved one) and print its body, or what a selector finds.",
}

function M.configure(command)
  command:argument("url_or_file", "An http:// or https:// URL, a file:// URL, or the path of a saved page.")
  command:mutex(
    command:option("--xpath", "Print what an XPath expression finds, one a line (elements as HTML).")
      :argname("EXPR"),
    command:option("--css", "Print what a CSS selector finds, one a line; ::text and ::attr(name) as in Scrapy.")
      :argname("SELECTOR"))
  command:flag("--headers", "Print the status line and the response headers first, as curl -i does.")
  command:flag("--allow-status", "Treat any status as success (without it, a non-2xx status exits 1).")
  command:option("-o --output", "Write the output to FILE instead of stdout."):argname("FILE")
  page_loader.configure(command)
end

-- "XPath '//a'" or "CSS selector 'a.b'": how messages name the selector given.
local function selector_name(parsed)
  if parsed.xpath then return "XPath " .. show(parsed.xpath) end
  return "CSS selector " .. show(parsed.css)
end

-- The selector's results on doc, or nil and the reason the selector is bad.
local function select(doc, parsed)
  local ok, found
  if parsed.xpath then
    ok, found = pcall(doc.xpath, doc, parsed.xpath)
  else
    ok, found = pcall(doc.css, doc, parsed.css)
  end
  if ok then return found end
  -- The library's message repeats the selector; the CLI's names it once, in front.
  local reason = require("forage.cli").clean_error(found)
  reason = reason:gsub("^xpath: ", ""):gsub("^css: ", "")
  local given = parsed.xpath or parsed.css
  for _, quoted in ipairs { " " .. show(given), " '" .. given .. "'" } do
    local at = reason:find(quoted, 1, true)
    if at then return nil, reason:sub(1, at - 1) .. reason:sub(at + #quoted) end
  end
  return nil, reason
end

local function write_headers(out, page)
  local line = page_loader.status_line(page)
  if line then out:write(line, "\n") end
  local names = {}
  for name in pairs(page.headers) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do out:write(name, ": ", page.headers[name], "\n") end
  out:write("\n")
end

function M.run(parsed, cli)
  local forage = require "forage"
  local selecting = parsed.xpath or parsed.css
  if selecting then
    -- A selector that cannot compile is a bad argument: say so before any request is made.
    local empty <close> = forage.html.parse("<html></html>")
    local _, reason = select(empty, parsed)
    if reason then return cli.fail(cli.USAGE, "bad " .. selector_name(parsed) .. ": " .. reason) end
  end
  local options, bad = page_loader.http_options(parsed)
  if not options then return cli.fail(cli.USAGE, bad) end

  local page, code = page_loader.load_or_fail(parsed.url_or_file, options, cli)
  if not page then return code end

  -- Everything is decided before the output file is opened, so a failure never leaves an
  -- empty or half-written file behind.
  local good_status = parsed.allow_status or page_loader.ok(page)
  local found, reason
  if selecting and good_status then
    local doc <close> = forage.html.parse(page.body, page.url)
    found, reason = select(doc, parsed)
    if found then
      for i, v in ipairs(found) do
        if type(v) == "userdata" then found[i] = v:html() else found[i] = tostring(v) end
      end
    end
  end
  if reason then return cli.fail(cli.USAGE, "bad " .. selector_name(parsed) .. ": " .. reason) end

  local failure
  if not good_status then
    failure = string.format("%s from %s (--allow-status to take it as it is)",
      page_loader.status_line(page), page_loader.url_for_message(page))
  elseif found and #found == 0 then
    failure = "no match for " .. selector_name(parsed)
  end
  -- A failure writes no file (the headers asked for still print, on stdout).
  local out = io.stdout
  if parsed.output and not failure then
    local err
    out, err = io.open(parsed.output, "wb")
    if not out then
      local why = page_loader.reason(err, parsed.output)
      return cli.fail(cli.FAILED, "cannot write " .. show(parsed.output) .. ": " .. why)
    end
  end
  if parsed.headers then write_headers(out, page) end
  if failure then return cli.fail(cli.FAILED, failure) end
  if found then
    for _, v in ipairs(found) do out:write(v, "\n") end
  else
    out:write(page.body)
  end
  if out ~= io.stdout then out:close() end
  return cli.OK
end

return M
