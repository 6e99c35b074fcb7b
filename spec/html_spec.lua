-- forage.html: libxml2 documents, XPath, CSS, links, and the memory they hold.
local html = require("forage").html
local css = require "forage.css"

-- A page shaped like ssr1.scrape.center's list of films.
local SSR1 = [[
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Scrape | Movie</title></head>
<body><div id="index"><div class="el-row">
  <div class="el-card item m-t is-hover-shadow">
    <div class="el-card__body">
      <a href="/detail/1" class="name"><h2 class="m-b-sm">霸王别姬 - Farewell My Concubine</h2></a>
      <div class="categories"><button><span>剧情</span></button><button><span>爱情</span></button></div>
    </div>
  </div>
  <div class="el-card item m-t is-hover-shadow">
    <div class="el-card__body">
      <a href="/detail/2" class="name"><h2 class="m-b-sm">这个杀手不太冷 - Léon</h2></a>
    </div>
  </div>
</div></div></body></html>
]]

-- The detail page of the same site.
local DETAIL = [[
<html><body><div class="directors el-row">
  <div class="director el-col el-col-4"><div class="el-card">
    <p class="name text-center m-b-none m-t-xs">陈凯歌</p></div></div>
  <div class="director el-col el-col-4"><div class="el-card">
    <p class="name text-center m-b-none m-t-xs">张艺谋</p></div></div>
</div></body></html>
]]

-- A page for the CSS forms: every selector below has a known answer here.
local FORMS = [[
<html><body>
<div id="main" class="box wide">
  <h1>Title</h1>
  <p class="lead">one</p>
  <p>two</p>
  <ul><li>a</li><li class="x">b</li><li>c</li><li>d</li><li>e</li></ul>
  <a href="http://example.com/x.pdf" rel="nofollow noopener" lang="en-US" title="it's &quot;q&quot;">pdf</a>
  <a href="/local">local</a>
</div>
<div class="boxy"><p>three</p></div>
</body></html>
]]

local function texts(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = type(v) == "string" and v or v:text() end
  return out
end

-- True under AddressSanitizer, whose quarantine holds freed memory (LeakSanitizer checks instead).
local helpers = require "helpers"

local function sanitized()
  local f = assert(io.open("/proc/self/maps"))
  local maps = f:read("a")
  f:close()
  return maps:find("libasan", 1, true) ~= nil
end

describe("forage.html", function()
  describe("the blog's example", function()
    it("finds the film links on the list page", function()
      local doc = html.parse(SSR1, "https://ssr1.scrape.center/")
      assert.same({ "/detail/1", "/detail/2" }, doc:xpath('//a[@class="name"]/@href'))
      assert.same({ "https://ssr1.scrape.center/detail/1", "https://ssr1.scrape.center/detail/2" }, doc:links())
    end)

    it("finds the directors on a detail page", function()
      local doc = html.parse(DETAIL, "https://ssr1.scrape.center/detail/1")
      assert.same({ "陈凯歌", "张艺谋" }, doc:xpath('//div[@class="directors el-row"]//p/text()'))
    end)

    it("gives the same answers through CSS", function()
      local doc = html.parse(SSR1)
      assert.same({ "/detail/1", "/detail/2" }, doc:css("a.name::attr(href)"))
      assert.same({ "霸王别姬 - Farewell My Concubine", "这个杀手不太冷 - Léon" }, doc:css("a.name h2::text"))
      assert.same({ "剧情", "爱情" }, doc:css(".categories span::text"))
    end)
  end)

  describe("xpath", function()
    local doc = html.parse(FORMS)

    it("returns elements as nodes, text and attributes as strings", function()
      local ps = doc:xpath("//p")
      assert.equal(3, #ps)
      assert.equal("forage.Node <p>", tostring(ps[1]))
      assert.equal("p", ps[1].tag)
      assert.same({ "one", "two", "three" }, doc:xpath("//p/text()"))
      assert.same({ "lead" }, doc:xpath("//p/@class"))
      assert.same({}, doc:xpath("//table"))
    end)

    it("returns strings, numbers and booleans as Lua values", function()
      assert.same({ 3 }, doc:xpath("count(//p)"))
      assert.equal("integer", math.type(doc:xpath("count(//p)")[1]))
      assert.same({ 1.5 }, doc:xpath("3 div 2"))
      assert.same({ "one" }, doc:xpath("string(//p)"))
      assert.same({ true }, doc:xpath("boolean(//h1)"))
      assert.same({ false }, doc:xpath("boolean(//h2)"))
    end)

    it("is relative to a node with node:xpath", function()
      local div = doc:xpath('//div[@class="boxy"]')[1]
      assert.same({ "three" }, texts(div:xpath(".//p")))
      assert.same({ "one", "two", "three" }, texts(div:xpath("//p")))   -- absolute stays absolute
      assert.equal(div, div:xpath("..")[1]:xpath("div[2]")[1])
    end)

    it("raises on an expression holding a NUL byte instead of running its prefix", function()
      assert.has_error(function() doc:xpath("//p\0[@nosuch]") end,
        "bad argument #1 to 'xpath' (expression contains a NUL byte)")
      local node = doc:xpath("//div")[1]
      assert.has_error(function() node:xpath(".//p\0") end)
      assert.has_error(function() doc:xpath(42) end)
    end)

    it("raises quoting an invalid expression", function()
      assert.has_error(function() doc:xpath("//a[@") end, "xpath: invalid expression '//a[@'")
      assert.has_error(function() doc:xpath("nosuch(1)") end, "xpath: invalid expression 'nosuch(1)'")
      local node = doc:xpath("//p")[1]
      assert.has_error(function() node:xpath("///") end, "xpath: invalid expression '///'")
    end)
  end)

  describe("nodes", function()
    local doc = html.parse('<div id="d" class="c">Hello <b>big</b> world<!-- no --></div>')
    local div = doc:xpath("//div")[1]

    it("text() concatenates all descendant text", function()
      assert.equal("Hello big world", div:text())
    end)

    it("attr() gives a string or nil", function()
      assert.equal("d", div:attr("id"))
      assert.is_nil(div:attr("href"))
    end)

    it("html() gives the outer HTML", function()
      assert.equal('<div id="d" class="c">Hello <b>big</b> world<!-- no --></div>', div:html())
      assert.equal("<b>big</b>", div:xpath("b")[1]:html())
    end)

    it("tag is the lower-case element name; other keys are methods", function()
      local upper = html.parse("<DIV><SPAN>x</SPAN></DIV>")
      assert.equal("span", upper:xpath("//span")[1].tag)
      assert.is_function(div.text)
      assert.is_nil(div.nosuch)
    end)

    it("compares equal when it is the same node", function()
      assert.equal(div, doc:xpath("//div")[1])
      assert.not_equal(div, doc:xpath("//b")[1])
      assert.equal(div, doc:root():xpath("body/div")[1])
    end)

    it("keeps its document alive after the document variable is gone", function()
      local node
      do
        local d = html.parse("<p>kept <i>alive</i></p>")
        node = d:xpath("//p")[1]
      end
      for _ = 1, 3 do collectgarbage() end
      assert.equal("kept alive", node:text())
      assert.equal("alive", node:xpath("i/text()")[1])
      assert.equal("<p>kept <i>alive</i></p>", node:html())
    end)

    it("raises once its document is closed", function()
      local node
      do
        local d <close> = html.parse("<p>x</p>")
        node = d:xpath("//p")[1]
      end
      assert.has_error(function() node:text() end, "attempt to use a node of a closed document")
      assert.has_error(function() return node.tag end, "attempt to use a node of a closed document")
      assert.equal("forage.Node (closed document)", tostring(node))
    end)
  end)

  describe("documents", function()
    it("close() is idempotent and later use raises", function()
      local doc = html.parse("<p>x</p>", "http://h/")
      assert.equal("forage.Document (http://h/)", tostring(doc))
      assert.equal("http://h/", doc:url())
      doc:close()
      doc:close()
      assert.equal("forage.Document (closed)", tostring(doc))
      assert.has_error(function() doc:xpath("//p") end, "attempt to use a closed forage.Document")
    end)

    it("parse checks its arguments", function()
      assert.has_error(function() html.parse() end)
      assert.has_error(function() html.parse(42) end, "bad argument #1 to 'parse' (string expected, got number)")
      assert.has_error(function() html.parse("<p>", 42) end)
      assert.has_error(function() html.parse("<p>", "http://h/\0x") end)
      assert.has_error(function() html.parse("<p>", nil, "no-such-charset") end,
        "bad argument #3 to 'parse' (unknown encoding 'no-such-charset')")
    end)

    it("an empty body gives an empty document", function()
      local doc = html.parse("", "http://h/")
      assert.same({}, doc:xpath("//p"))
      assert.is_nil(doc:root())
      assert.same({}, doc:links())
      assert.equal("http://h/", doc:url())
    end)
  end)

  describe("css", function()
    local doc = html.parse(FORMS)
    local cases = {
      { "h1", { "Title" } },
      { "ul > *", { "a", "b", "c", "d", "e" } },
      { ".lead", { "one" } },
      { "#main > h1", { "Title" } },
      { "[rel]", { "pdf" } },
      { "[href='/local']", { "local" } },
      { "a[rel~=noopener]", { "pdf" } },
      { "a[rel~=noop]", {} },
      { "a[href^=http]", { "pdf" } },
      { "a[href$='.pdf']", { "pdf" } },
      { "a[href*=example]", { "pdf" } },
      { "a[lang|=en]", { "pdf" } },
      { [[a[title="it's \"q\""] ]], { "pdf" } },
      { "div p", { "one", "two", "three" } },
      { "div > p", { "one", "two", "three" } },
      { "#main > p", { "one", "two" } },
      { "h1 + p", { "one" } },
      { "h1 + ul", {} },
      { "h1 ~ p", { "one", "two" } },
      { "li:nth-child(2)", { "b" } },
      { "li:nth-child(odd)", { "a", "c", "e" } },
      { "li:nth-child(even)", { "b", "d" } },
      { "li:nth-child(3n)", { "c" } },
      { "li:nth-child(-n+2)", { "a", "b" } },
      { "li:first-child", { "a" } },
      { "li:last-child", { "e" } },
      { "li.x, h1", { "Title", "b" } },   -- a group comes back in document order
      { "div.box", { "Title one two abcde pdf local" } },
      { ".wide.box#main h1", { "Title" } },
      { "p::text", { "one", "two", "three" } },
      { "a::attr(href)", { "http://example.com/x.pdf", "/local" } },
    }
    for _, case in ipairs(cases) do
      it(("%s"):format(case[1]), function()
        local got = texts(doc:css(case[1]))
        for i, s in ipairs(got) do got[i] = s:gsub("%s+", " "):match("^%s*(.-)%s*$") end
        assert.same(case[2], got)
      end)
    end

    it("compiles to the documented XPath", function()
      assert.equal("descendant-or-self::*[contains(concat(' ', normalize-space(@class), ' '), ' c ')]",
        css.compile(".c"))
      -- from a document, chains are matched right to left (linear in the page)
      assert.equal("descendant-or-self::p[parent::div]", css.compile("div > p"))
      assert.equal("descendant-or-self::a[ancestor::div]", css.compile("div a"))
      assert.equal("descendant-or-self::p[preceding-sibling::*[1][self::h1]]", css.compile("h1 + p"))
      assert.equal("descendant-or-self::a[ancestor::li[preceding-sibling::h1[parent::ul]]]",
        css.compile("ul > h1 ~ li a"))
      -- from a node, the leftmost compound must lie inside it: at least as deep as the node,
      -- or, when a sibling combinator could leave the subtree sideways, left to right
      assert.equal("descendant-or-self::p[parent::div[count(ancestor::node()) >= $forage_depth]]",
        css.compile("div > p", true))
      assert.equal("descendant-or-self::p", css.compile("p", true))
      assert.equal("descendant-or-self::h1/following-sibling::*[1]/self::p", css.compile("h1 + p", true))
      assert.equal("descendant-or-self::a/@href | descendant-or-self::p/text()",
        css.compile("a::attr(href), p::text"))
    end)

    it("node:css is relative to the node, the node itself included", function()
      local box = doc:css("div.boxy")[1]
      assert.same({ "three" }, box:css("p::text"))
      assert.same({ "boxy" }, box:css("div::attr(class)"))
      local a = doc:css("a")[2]
      assert.same({ "/local" }, a:css("::attr(href)"))
      assert.same({ "local" }, a:css("::text"))
    end)

    it("gives the same answers from a document and from its root node", function()
      local root = doc:root()
      for _, sel in ipairs { "div p", "div > p", "h1 + p", "h1 ~ p", "div li:nth-child(2)", "#main a::attr(href)",
                              "body div ul > li", "div.box p, li.x" } do
        assert.same(texts(doc:css(sel)), texts(root:css(sel)), sel)
      end
      -- the leftmost compound must lie inside the node: the outer div is not
      local ul = doc:css("ul")[1]
      assert.same({}, ul:css("div li"))
      assert.same({ "b" }, texts(ul:css("ul li.x")))
      assert.same({ "b" }, texts(ul:css("ul > li.x")))
      local nested = html.parse("<div id=o><div id=i><p><a>1</a></p></div><a>2</a></div>")
      local inner = nested:css("#i")[1]
      assert.same({ "1" }, texts(inner:css("div a")))
      assert.same({ "1" }, texts(inner:css("div p a")))
      assert.same({}, texts(inner:css("#o a")))
      assert.same({ "1", "2" }, texts(nested:css("#o")[1]:css("div a")))
    end)

    it("matches the descendant combinator from a node in time linear in its subtree", function()
      local rows = {}
      for i = 1, 80000 do rows[i] = ("<div><a href='/%d'>x</a></div>"):format(i) end
      local body = html.parse("<body>" .. table.concat(rows) .. "</body>"):css("body")[1]
      local t = os.clock()
      assert.equal(80000, #body:css("div a"))
      assert.is_true(os.clock() - t < 5, "div a took " .. (os.clock() - t) .. " s")
    end)

    it("matches the descendant combinator in time linear in the page", function()
      local rows = {}
      for i = 1, 80000 do rows[i] = ("<div><a href='/%d'>x</a></div>"):format(i) end
      local page = html.parse("<body>" .. table.concat(rows) .. "</body>")
      local t = os.clock()
      assert.equal(80000, #page:css("div a"))
      local hrefs = page:css("div a::attr(href)")
      assert.equal(80000, #hrefs)
      assert.equal("/1", hrefs[1])
      assert.equal("/80000", hrefs[80000])
      -- a generous bound: the quadratic form took 10 s here, the linear one a few hundredths
      assert.is_true(os.clock() - t < 5, "div a took " .. (os.clock() - t) .. " s")
    end)

    it("raises a clear error for an :nth-child number too large, naming the selector", function()
      local ok, err = pcall(doc.css, doc, "a:nth-child(99999999999999999999n+1)")
      assert.is_false(ok)
      assert.matches("^css: invalid selector 'a:nth%-child%(99999999999999999999n%+1%)' %(number too large", err)
      ok, err = pcall(doc.css, doc, "a:nth-child(99999999999999999999)")
      assert.is_false(ok)
      assert.matches("number too large", err)
    end)

    it("never repeats more than 60 bytes of a selector or an expression", function()
      local long = ("a"):rep(10 * 1024 * 1024)
      local ok, err = pcall(doc.css, doc, long .. "[")
      assert.is_false(ok)
      assert.is_true(#err < 200, #err)
      ok, err = pcall(doc.xpath, doc, "//" .. long .. "[")
      assert.is_false(ok)
      assert.is_true(#err < 200, #err)
      assert.matches("^xpath: invalid expression '//aaa", err)
    end)

    it("raises quoting an invalid selector", function()
      for _, bad in ipairs({ "", "a[", "a >", "a,", "p::nope", "li:hover", "a]", "[x=]" }) do
        local ok, err = pcall(doc.css, doc, bad)
        assert.is_false(ok)
        assert.truthy(err:find("css: invalid selector '" .. bad .. "'", 1, true), err)
      end
    end)
  end)

  describe("links", function()
    it("resolves, skips javascript: and mailto:, and de-duplicates in order", function()
      local doc = html.parse([[
        <a href="b.html">1</a><a href=" /root ">2</a><a href="javascript:void(0)">j</a>
        <a href="MAILTO:x@y">m</a><a href="b.html">again</a><a href="//cdn.example/x">3</a>
        <a href="https://other.example/y?q=1#f">4</a><a>no href</a><a href="?page=2">5</a>
      ]], "http://site.example/dir/page.html")
      assert.same({
        "http://site.example/dir/b.html", "http://site.example/root", "http://cdn.example/x",
        "https://other.example/y?q=1#f", "http://site.example/dir/page.html?page=2",
      }, doc:links())
    end)

    it("honours <base href>", function()
      local doc = html.parse('<head><base href="/base/"></head><a href="x">x</a>', "http://h/a/b")
      assert.same({ "http://h/base/x" }, doc:links())
    end)

    it("leaves relative links relative without a document URL", function()
      assert.same({ "x.html" }, html.parse('<a href="x.html">x</a>'):links())
    end)
  end)

  describe("broken input", function()
    it("recovers from unclosed and stray tags", function()
      local doc = html.parse("<div><p>one<p>two</span><li>three</div></b><table><td>cell")
      assert.same({ "one", "two" }, doc:xpath("//p/text()"))
      assert.same({ "cell" }, doc:css("td::text"))
    end)

    it("survives NUL bytes and stray bytes in the body", function()
      local doc = html.parse("<p>a\0b</p><p>\255\254c</p><p>d</p>")
      local ps = doc:xpath("//p")
      assert.equal(3, #ps)
      assert.equal("d", ps[3]:text())
      assert.truthy(ps[1]:text():find("^a.b$"))
    end)

    it("parses deeply nested pages whole: nothing after level 256 is lost", function()
      local doc = html.parse(("<font size=2>"):rep(300) .. "<p>text</p><a href='/next'>next</a>", "http://h/")
      assert.same({ "http://h/next" }, doc:links())
      assert.same({ "text" }, doc:xpath("//p/text()"))
      local deep = html.parse(("<div>"):rep(20000) .. "<a href='/x'>x</a>" .. ("</div>"):rep(20000), "http://h/")
      assert.same({ "http://h/x" }, deep:links())
      assert.same({ 20000 }, deep:xpath("count(//div)"))
      assert.same({ "x" }, deep:css("div a::text"))
      assert.equal("x", deep:root():text())
      assert.equal(20000 * 11 + 18, #deep:xpath("//div")[1]:html())
    end)

    it("reports a page libxml2 gives up on instead of passing it off as empty", function()
      -- "<\0\0\0" reads as UCS-4 to libxml2's encoding guess, which then stops on the rest:
      -- it used to give an empty document without a word
      local body = "<\0\0\0\0base href='/x'><a href='/y'>y</a>"
      local doc, err, kind = html.parse(body, "http://h/")
      if doc then
        assert.same({ "http://h/y" }, doc:links())   -- a libxml2 that reads it whole
      else
        assert.equal("malformed", kind)
        assert.matches("^html: libxml2 stopped before the end of the page", err)
      end
    end)

    it("parses a huge page", function()
      local rows = {}
      for i = 1, 50000 do rows[i] = ('<tr><td class="n">%d</td><td>%s</td></tr>'):format(i, ("x"):rep(40)) end
      local doc = html.parse("<table>" .. table.concat(rows) .. "</table>")
      assert.same({ 50000 }, doc:xpath("count(//td[@class='n'])"))
      assert.same({ "50000" }, doc:xpath("string((//td[@class='n'])[last()])"))
    end)

    it("says nothing on stderr about broken pages or bad XPath", function()
      local out, ok = require("spec.helpers").run_lua([[
        local html = require("forage.web").html
        local doc = html.parse("<p><b>&nosuch; </i>\0\255<![CDATA[ x")
        pcall(doc.xpath, doc, "//a[@")
        pcall(doc.xpath, doc, "nosuch()")
        io.write("done")
      ]])
      assert.is_true(ok)
      assert.equal("done", out)
    end)
  end)

  describe("encodings", function()
    local latin1 = '<html><head><meta charset="iso-8859-1"></head><body><p>caf\233 \252ber</p></body></html>'

    it("follows <meta charset> and gives UTF-8 strings", function()
      assert.same({ "café über" }, html.parse(latin1):xpath("//p/text()"))
    end)

    it("follows the http-equiv form too", function()
      local page = '<meta http-equiv="Content-Type" content="text/html; charset=windows-1252"><p>\128 5</p>'
      assert.same({ "€ 5" }, html.parse(page):xpath("//p/text()"))
    end)

    it("takes the encoding argument over the page's", function()
      assert.same({ "café" }, html.parse("<p>caf\233</p>", nil, "ISO-8859-1"):xpath("//p/text()"))
      local utf8_page = '<meta charset="iso-8859-1"><p>café</p>'
      assert.same({ "café" }, html.parse(utf8_page, nil, "UTF-8"):xpath("//p/text()"))
    end)

    it("defaults to UTF-8", function()
      assert.same({ "日本語 café" }, html.parse("<p>日本語 café</p>"):xpath("//p/text()"))
    end)
  end)

  describe("memory", function()
    it("stays flat over 10,000 pages", function()
      -- In a fresh process: what the suite did before (large messages freed, which raise
      -- glibc's mmap threshold) must not decide whether this process's heap looks flat.
      local out, ok = helpers.run_lua([=[
        local html = require("forage.web").html
        local function rss_kb()
          local f = assert(io.open("/proc/self/status"))
          local status = f:read("a")
          f:close()
          return tonumber(status:match("VmRSS:%s*(%d+)"))
        end
        local rows = {}
        for r = 1, 20 do rows[r] = ('<li class="row r%d"><span>%s</span></li>'):format(r, ("x"):rep(50)) end
        rows = table.concat(rows)
        local function page(i)
          return ([[<html><head><title>Page %d</title></head><body><div class="item">
            <a class="name" href="/detail/%d">film %d</a><p>%s</p><ul>%s</ul></div></body></html>]]):format(
            i, i, i, ("x"):rep(200), rows)
        end
        local function crawl(from, to)
          for i = from, to do
            local doc = html.parse(page(i), "http://h/list")
            assert(#doc:xpath('//a[@class="name"]/@href') == 1)
            assert(#doc:css("div.item a::text") == 1)
            assert(#doc:links() == 1)
            local node = doc:xpath("//p")[1]
            if i % 2 == 0 then doc:close() else assert(node:text()) end
          end
        end
        crawl(1, 2000)   -- warm-up: caches, allocator arenas
        collectgarbage()
        collectgarbage()
        local lua_before, rss_before = collectgarbage("count"), rss_kb()
        crawl(2001, 12000)
        collectgarbage()
        collectgarbage()
        print(("grew %d %d"):format(math.floor(collectgarbage("count") - lua_before), rss_kb() - rss_before))
      ]=])
      assert.is_true(ok, out)
      local lua_kb, rss = out:match("grew (%-?%d+) (%-?%d+)")
      assert.is_true(tonumber(lua_kb) < 512, ("Lua heap grew %s KiB"):format(lua_kb))
      if sanitized() then return end
      assert.is_true(tonumber(rss) < 8 * 1024, ("RSS grew %s KiB"):format(rss))
    end)
  end)
end)
