-- bin/forage: the commands, their exit codes and messages, against the local nginx of
-- spec/fixtures.lua, a one-request server made here, and local files.
local fixtures = require "fixtures"
local helpers = require "helpers"
local socket = require "socket"
local forage = require "forage"

local ROOT = assert(os.getenv("PWD"), "the specs run from the checkout")
local LUA_PATH = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"
local LUA_CPATH = ROOT .. "/?.so;;"

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local forage_cli = helpers.forage_cli

-- Asserts that `forage args` (in cwd) fails with code, prints nothing on stdout and
-- exactly `forage: message` on stderr.
local function assert_fails(args, code, message, cwd)
  local out, err, got = forage_cli(args, nil, cwd)
  assert.equal(code, got, args)
  assert.equal("", out, args)
  assert.equal("forage: " .. message .. "\n", err)
end

-- Asserts that `forage args` (in cwd, with input on stdin) exits 0, says nothing on stderr
-- and prints expected.
local function assert_prints(args, expected, cwd, input)
  local out, err, code = forage_cli(args, input, cwd)
  assert.equal(0, code, args .. ": " .. err)
  assert.equal("", err, args)
  assert.equal(expected, out, args)
end

local function plain(s) return (s:gsub("%p", "%%%0")) end

-- A server for exactly one request, in a forked process: it answers with the request's
-- head as the body, then leaves. Returns its URL and the process (join it).
local function one_request_server(body)
  local server = assert(socket.bind("127.0.0.1", 0))
  local _, port = server:getsockname()
  local p = forage.process(function()
    server:settimeout(30)
    local c = assert(server:accept())
    c:settimeout(30)
    local head = {}
    repeat
      local line = c:receive("*l")
      head[#head + 1] = line
    until line == nil or line == ""
    local reply = body or table.concat(head, "\n")
    c:send("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\nContent-Length: " .. #reply
      .. "\r\n\r\n" .. reply)
    c:close()
    server:close()
  end)
  p:start()
  server:close()
  return "http://127.0.0.1:" .. port .. "/", p
end

local page = [[<html><body>
<div class="el-card"><a class="name" href="/detail/1"><h2>Farewell My Concubine</h2></a></div>
<div class="el-card"><a class="name" href="/detail/2"><h2>Titanic</h2></a></div>
<div class="directors el-row"><p>Chen Kaige</p></div>
</body></html>]]

-- Starts the local servers around a describe block, with the page above as /list.html.
local function serve_list_page(fx)
  setup(function()
    fixtures.start(fx)
    helpers.write(fx.dir .. "/www/list.html", page)
  end)
  teardown(function() fixtures.stop(fx) end)
end

describe("forage (the command line)", function()
  it("lists its commands with --help and exits 0", function()
    local out, err, code = forage_cli("--help")
    assert.equal(0, code)
    assert.equal("", err)
    for _, name in ipairs { "fetch", "shell", "version", "help" } do
      assert.truthy(out:find("\n   " .. name .. " ", 1, true), name)
    end
    assert.truthy(out:find("Exit codes", 1, true))
  end)

  it("prints the version of the forage modules", function()
    assert_prints("version", "forage " .. forage.version .. "\n")
    assert_prints("--version", "forage " .. forage.version .. "\n")
  end)

  it("prints a command's usage with --help, -h or help COMMAND, and never fetches -h", function()
    for _, args in ipairs { "fetch --help", "fetch -h", "help fetch" } do
      local out, err, code = forage_cli(args)
      assert.equal(0, code, args)
      assert.equal("", err, args)
      assert.truthy(out:find("^Usage: forage fetch"), args)
      assert.truthy(out:find("--allow-status", 1, true), args)
    end
    local out, _, code = forage_cli("help shell")
    assert.equal(0, code)
    assert.truthy(out:find("^Usage: forage shell"))
    out, _, code = forage_cli("help")
    assert.equal(0, code)
    assert.truthy(out:find("^Usage: forage "))
  end)

  it("exits 2 with the usage on bad arguments", function()
    local cases = {
      { "", "a command is required" },
      { "crawl", "missing argument 'spider'" },
      { "help crawle", "unknown command 'crawle'" },
      { "crawl a.lua --workers", "option '--workers' requires an argument" },
      { "fetch", "missing argument 'url_or_file'" },
      { "fetch http://x --bogus", "unknown option '--bogus'" },
      { "fetch http://x --xpath a --css b", "option '--css' can not be used together with option '--xpath'" },
      { "fetch http://x --timeout soon", "--timeout takes a number of seconds >= 0, got 'soon'" },
      { "fetch http://x --timeout=-1", "--timeout takes a number of seconds >= 0" },
      { "fetch http://x a b", "too many arguments" },
      { "fetch http://x -H nocolon", "-H wants 'Name: value' on one line, got 'nocolon'" },
    }
    local long = ("x"):rep(100)
    cases[#cases + 1] = { "fetch http://x --" .. long, "unknown option '--" .. long:sub(1, 58) .. "...'" }
    cases[#cases + 1] = { long, "unknown command '" .. long:sub(1, 60) .. "...'" }
    for _, case in ipairs(cases) do
      local out, err, code = forage_cli(case[1])
      assert.equal(2, code, case[1])
      assert.equal("", out, case[1])
      assert.truthy(err:find("forage: " .. case[2], 1, true), case[1] .. ": " .. err)
      assert.falsy(err:find(".lua", 1, true), err)
    end
  end)
end)

describe("forage fetch", function()
  local fx = {}
  serve_list_page(fx)

  it("prints the body of a page", function()
    local out, err, code = forage_cli("fetch " .. fx.base .. "/list.html")
    assert.equal(0, code)
    assert.equal("", err)
    assert.equal(page, out)
  end)

  it("prints what an XPath finds, one a line", function()
    assert_prints("fetch " .. fx.base .. "/list.html --xpath '//a[@class=\"name\"]/@href'", "/detail/1\n/detail/2\n")
  end)

  it("prints what a CSS selector finds, with ::text", function()
    assert_prints("fetch " .. fx.base .. "/list.html --css 'a.name h2::text'", "Farewell My Concubine\nTitanic\n")
  end)

  it("prints elements as HTML, and the value of count()", function()
    assert.equal("<p>Chen Kaige</p>\n", (forage_cli("fetch " .. fx.base .. "/list.html --css 'div.directors p'")))
    assert.equal("2\n", (forage_cli("fetch " .. fx.base .. "/list.html --xpath 'count(//h2)'")))
  end)

  it("says 'no match' on stderr and exits 1 when a selector finds nothing", function()
    assert_fails("fetch " .. fx.base .. "/list.html --css 'h3'", 1, "no match for CSS selector 'h3'")
    assert_fails("fetch " .. fx.base .. "/list.html --xpath '//h3'", 1, "no match for XPath '//h3'")
  end)

  it("names a bad XPath or CSS selector without a file path, exits 2, and fetches nothing", function()
    -- the dead port: a fetch would exit 1, so 2 says the selector was refused first
    local dead = "http://127.0.0.1:" .. fx.dead_port .. "/"
    local out, err, code = forage_cli("fetch " .. dead .. " --xpath '//a[@'")
    assert.equal(2, code)
    assert.equal("", out)
    assert.truthy(err:find("^forage: bad XPath '//a%[@': %S"), err)
    assert.falsy(err:find(".lua", 1, true), err)
    assert.falsy(err:find("/bin/", 1, true), err)
    out, err, code = forage_cli("fetch " .. dead .. " --css 'a['")
    assert.equal(2, code)
    assert.equal("", out)
    assert.truthy(err:find("^forage: bad CSS selector 'a%[': %S"), err)
    assert.falsy(err:find(".lua", 1, true), err)
  end)

  it("repeats a long selector once, cut to 60 bytes, in its message", function()
    local long = ("x"):rep(200)
    for _, option in ipairs { "--xpath '//a[@", "--css 'a[" } do
      local _, err, code = forage_cli("fetch " .. fx.base .. "/list.html " .. option .. long .. "'")
      assert.equal(2, code)
      assert.falsy(err:find(("x"):rep(61), 1, true), err)
      assert.equal(1, select(2, err:gsub(("x"):rep(50), "")), err)
    end
  end)

  it("treats a non-2xx status as a failure (exit 1) with or without a selector", function()
    for _, selector in ipairs { "", " --css 'h1::text'" } do
      local out, err, code = forage_cli("fetch " .. fx.base .. "/missing.html" .. selector)
      assert.equal(1, code, selector)
      assert.equal("", out, selector)
      assert.truthy(err:find("^forage: HTTP/1.1 404 Not Found from '" .. plain(fx.base) .. "/missing.html'"), err)
      assert.truthy(err:find("--allow-status", 1, true))
    end
  end)

  it("shows no password of the URL in a status message", function()
    local url = fx.base:gsub("//", "//user:s3cret@") .. "/missing.html"
    local _, err, code = forage_cli("fetch " .. url)
    assert.equal(1, code)
    assert.truthy(err:find("404 Not Found", 1, true), err)
    assert.falsy(err:find("s3cret", 1, true), err)
  end)

  it("takes any status as it is with --allow-status", function()
    local out, _, code = forage_cli("fetch " .. fx.base .. "/missing.html --allow-status")
    assert.equal(0, code)
    assert.truthy(out:find("404 Not Found", 1, true))
    assert_prints("fetch " .. fx.base .. "/missing.html --allow-status --css 'h1::text'", "404 Not Found\n")
  end)

  it("prints a curl -i status line and the headers with --headers", function()
    local out, _, code = forage_cli("fetch " .. fx.base .. "/page.txt --headers")
    assert.equal(0, code)
    assert.truthy(out:find("^HTTP/1.1 200 OK\n"), out:sub(1, 80))
    assert.truthy(out:find("\ncontent-type: text/plain\n", 1, true))
    assert.truthy(out:find("\n\n" .. fx.page, 1, true))
    assert.equal(#out, select(2, out:find("\n\n" .. fx.page, 1, true)))
  end)

  it("follows redirects, and not with --no-follow", function()
    assert_prints("fetch " .. fx.base .. "/redirect", fx.page)
    local out, err, code = forage_cli("fetch " .. fx.base .. "/redirect --no-follow")
    assert.equal(1, code)
    assert.equal("", out)
    assert.truthy(err:find("HTTP/1.1 302 Found", 1, true), err)
    out, err, code = forage_cli("fetch " .. fx.base .. "/redirect --no-follow --allow-status --headers")
    assert.equal(0, code, err)
    assert.truthy(out:find("^HTTP/1.1 302 Found\n"))
    assert.truthy(out:find("\nlocation: " .. plain(fx.base) .. "/page.txt\n"), out)
  end)

  it("sends User-Agent forage/<version> unless -A or -H says otherwise, and each -H", function()
    local cases = {
      { "", "User-Agent: forage/" .. forage.version },
      { " -A 'Mozilla/5.0 (test)'", "User-Agent: Mozilla/5.0 (test)" },
      { " --user-agent bot/1", "User-Agent: bot/1" },
      { " -H 'User-Agent: own/2' -A ignored/1", "User-Agent: own/2" },
    }
    for _, case in ipairs(cases) do
      local url, p = one_request_server()
      local out, err, code = forage_cli("fetch " .. url .. case[1] .. " -H 'X-One: 1' -H 'X-Two:  two words '")
      assert.equal(0, helpers.join_or_fail(p, 30), "the server answered one request")
      assert.equal(0, code, err)
      local agents = select(2, out:gsub("\n[Uu]ser%-[Aa]gent:", ""))
      assert.equal(1, agents, out)
      assert.truthy(out:find("\n" .. plain(case[2]) .. "\r?\n"), out)
      assert.truthy(out:find("\nX%-One: 1\r?\n"), out)
      assert.truthy(out:find("\nX%-Two: two words\r?\n"), out)
    end
  end)

  it("writes the output to a file with -o, and no file when the fetch fails", function()
    local path = os.tmpname()
    os.remove(path)
    assert_prints("fetch " .. fx.base .. "/list.html -o " .. path, "")
    assert.equal(page, helpers.read(path))
    os.remove(path)
    assert_prints("fetch " .. fx.base .. "/list.html --css 'h2::text' --output " .. path, "")
    assert.equal("Farewell My Concubine\nTitanic\n", helpers.read(path))
    os.remove(path)
    for _, failing in ipairs { "/missing.html", "/missing.html --headers", "/list.html --css h3" } do
      local out, _, code = forage_cli("fetch " .. fx.base .. failing .. " -o " .. path)
      assert.equal(1, code, failing)
      assert.is_nil(io.open(path), failing)
      -- the headers asked for still print, on stdout
      if failing:find("--headers", 1, true) then
        assert.truthy(out:find("^HTTP/1.1 404 Not Found\n"), out)
      else
        assert.equal("", out, failing)
      end
    end
    assert_fails("fetch " .. fx.base .. "/list.html -o /nonexistent-dir/out.html", 1,
      "cannot write '/nonexistent-dir/out.html': No such file or directory")
  end)

  it("goes through a proxy", function()
    local out, _, code = forage_cli("fetch " .. fx.base .. "/list.html --proxy " .. fx.proxy ..
      " --css 'div.directors p::text'")
    assert.equal(0, code)
    assert.equal("Chen Kaige\n", out)
  end)

  it("says why a fetch failed, and exits 1", function()
    local out, err, code = forage_cli("fetch http://127.0.0.1:" .. fx.dead_port .. "/")
    assert.equal(1, code)
    assert.equal("", out)
    assert.truthy(err:find("forage: fetch failed %(connect%): %u"), err)
  end)

  it("gives up after --timeout", function()
    -- the stall socket never answers: the outcome is a timeout whatever the machine's speed
    local out, err, code = forage_cli("fetch http://127.0.0.1:" .. fx.stall_port .. "/ --timeout 0.5")
    assert.equal(1, code)
    assert.equal("", out)
    assert.truthy(err:find("forage: fetch failed (timeout)", 1, true), err)
  end)
end)

describe("forage fetch on a saved page", function()
  local dir

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. quote(dir .. "/sub dir")))
    helpers.write(dir .. "/list.html", page)
    helpers.write(dir .. "/sub dir/a page.html", page)
  end)

  teardown(function() os.execute("rm -rf " .. quote(dir)) end)

  it("reads a relative path, an absolute path and a file:// URL", function()
    for _, target in ipairs { "list.html", "./list.html", dir .. "/list.html", "file://" .. dir .. "/list.html",
                              "'file://" .. dir .. "/sub%20dir/a%20page.html'", "'sub dir/a page.html'" } do
      local out, err, code = forage_cli("fetch " .. target .. " --css 'a.name h2::text'", nil, dir)
      assert.equal(0, code, target .. ": " .. err)
      assert.equal("Farewell My Concubine\nTitanic\n", out, target)
    end
    assert_prints("fetch list.html", page, dir)
  end)

  it("resolves the links of a saved page against its file:// URL", function()
    assert_prints("shell list.html", "file://" .. dir .. "/list.html\nfile:///detail/1\n", dir,
      "page.url\npage:links()[1]\n")
  end)

  it("prints no status line for a file, only its length, with --headers", function()
    assert_prints("fetch list.html --headers", "content-length: " .. #page .. "\n\n" .. page, dir)
  end)

  it("exits 1 when the file cannot be read, and 2 for a file:// URL of another host", function()
    assert_fails("fetch nothere.html", 1,
      "cannot read 'nothere.html': No such file or directory (a URL starts with http:// or https://)", dir)
    assert_fails("fetch ./nothere.html", 1, "cannot read './nothere.html': No such file or directory", dir)
    assert_fails("fetch gopher://127.0.0.1/", 2,
      "bad URL: forage reads http://, https:// and file:// URLs, got 'gopher://127.0.0.1/'", dir)
    assert_fails("fetch file://elsewhere/list.html", 2, "bad URL: a file:// URL names a local path (file:///path), "
      .. "got 'file://elsewhere/list.html'", dir)
  end)
end)

describe("forage shell", function()
  local fx = {}
  serve_list_page(fx)

  it("binds page, prints expressions' values, runs statements, and no prompt from a pipe", function()
    local out, err, code = forage_cli("shell " .. fx.base .. "/list.html", table.concat({
      "page.url",
      "page.status",
      "page.headers['content-type']",
      "#page.body == " .. #page,
      "page:css('a.name h2::text')",
      "page:xpath('//div[@class=\"directors el-row\"]/p')",
      "page:xpath('//p')[1]:text()",
      "page:links()",
      "page:urljoin('/detail/3')",
      "select(2, pcall(page.urljoin, page, 3))",
      "titles = page:css('h2::text')",
      "#titles, titles[2]",
      "tostring(page)",
    }, "\n") .. "\n")
    assert.equal("", err)
    assert.equal(0, code)
    assert.equal(table.concat({
      fx.base .. "/list.html",
      "200",
      "text/html",
      "true",
      '{ "Farewell My Concubine", "Titanic" }',
      "{ <p>Chen Kaige</p> }",
      "Chen Kaige",
      '{ "' .. fx.base .. '/detail/1", "' .. fx.base .. '/detail/2" }',
      fx.base .. "/detail/3",
      "bad argument #1 to 'urljoin' (string expected, got number)",
      "2\tTitanic",
      "<200 " .. fx.base .. "/list.html>",
    }, "\n") .. "\n", out)
  end)

  it("prints an error and goes on; reads a statement over several lines", function()
    local out, err, code = forage_cli("shell " .. fx.base .. "/list.html",
      "error('boom')\nfor i = 1, 2 do\n  print(i)\nend\npage:xpath('//a[@')\nx = = 1\n'still here'\n")
    assert.equal(0, code)
    assert.equal("1\n2\nstill here\n", out)
    assert.truthy(err:find("^stdin:1: boom\n"), err)
    assert.truthy(err:find("//a[@", 1, true), err)
    assert.truthy(err:find("stdin:1: unexpected symbol", 1, true), err)
    assert.falsy(err:find(".lua", 1, true), err)
  end)

  it("loads another page with fetch(url), relative to the page, and keeps the page when it fails", function()
    local out, err, code = forage_cli("shell " .. fx.base .. "/list.html", table.concat({
      "fetch('/page.txt')",
      "page.body == " .. string.format("%q", fx.page):gsub("\\\n", "\\n"),
      "fetch('http://127.0.0.1:" .. fx.dead_port .. "/')",
      "page.url",
    }, "\n") .. "\n")
    assert.equal("", err)
    assert.equal(0, code)
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.equal("<200 " .. fx.base .. "/page.txt>", lines[1])
    assert.equal("true", lines[2])
    assert.truthy(lines[3]:find("^nil\t.+\tconnect$"), lines[3])
    assert.equal(fx.base .. "/page.txt", lines[4])
    assert.equal(4, #lines)
  end)

  it("tries any number of selectors on one request", function()
    local url, p = one_request_server(page)
    local input = {}
    for i = 1, 10 do input[i] = "#page:css('h2') + #page:xpath('//a') + #page:links()" end
    local out, err, code = forage_cli("shell " .. url, table.concat(input, "\n") .. "\n")
    assert.equal(0, helpers.join_or_fail(p, 30), "the server answered one request")
    assert.equal("", err)
    assert.equal(0, code)
    assert.equal(("6\n"):rep(10), out)
  end)

  it("opens a page of any status: what a 404 says is worth a look", function()
    local out, err, code = forage_cli("shell " .. fx.base .. "/missing.html", "page.status\npage:css('h1::text')[1]\n")
    assert.equal("", err)
    assert.equal(0, code)
    assert.equal("404\n404 Not Found\n", out)
  end)

  it("leaves with exit(n) and its code, or at the end of input with 0", function()
    local out, _, code = forage_cli("shell " .. fx.base .. "/list.html", "1\nexit(3)\n2\n")
    assert.equal(3, code)
    assert.equal("1\n", out)
    _, _, code = forage_cli("shell " .. fx.base .. "/list.html", "exit()\n")
    assert.equal(0, code)
  end)

  it("starts with no page, and exits 1 when the first fetch fails", function()
    assert_prints("shell", "nil\n200\n", nil, "page\nfetch('" .. fx.base .. "/list.html').status\n")
    local out, err, code = forage_cli("shell http://127.0.0.1:" .. fx.dead_port .. "/", "1\n")
    assert.equal(1, code)
    assert.equal("", out)
    assert.truthy(err:find("forage: fetch failed (connect)", 1, true), err)
  end)

  it("shows a banner and a prompt on a terminal", function()
    if not os.execute("command -v script >/dev/null") then
      pending("script(1) is not installed")
      return
    end
    -- script(1) gives the shell a terminal, types the input, then Ctrl-D
    local inp = os.tmpname()
    helpers.write(inp, "40 + 2\n")
    local p = assert(io.popen(string.format("cd %s && LUA_PATH=%s LUA_CPATH=%s script -qec %s /dev/null <%s",
      quote(ROOT), quote(LUA_PATH), quote(LUA_CPATH),
      quote("lua5.4 bin/forage shell " .. fx.base .. "/list.html"), inp)))
    local out = p:read("a")
    p:close()
    os.remove(inp)
    assert.truthy(out:find("forage " .. forage.version .. " shell", 1, true), out)
    assert.truthy(out:find("page = <200 " .. fx.base .. "/list.html>", 1, true), out)
    assert.truthy(out:find("> 42", 1, true), out)
  end)
end)
