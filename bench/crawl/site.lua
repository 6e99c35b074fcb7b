-- The crawl benchmark's site: static files in the shape of the blog's movie site
-- (https://ssr1.scrape.center), for nginx to serve, and its known answer.
--
--   /page/N     a list page: 10 movies, each <div class="el-card"> with <a class="name" href="/detail/ID">
--   /detail/ID  a detail page of about 16 KB: 1-3 directors in <div class="directors el-row">, each a
--               <p class="name">, and an actors block that uses p.name too (a query that is not
--               scoped to the directors finds the actors as well, and the answer check says so)
--
-- Everything is deterministic (an LCG per page, no math.random state), so every run serves the
-- same bytes and the answer is known without parsing anything.

local M = {}

M.PER_LIST = 10

local SURNAMES = { "陈", "张", "王", "李", "Kubrick", "Nolan", "Scott", "Fincher", "Kurosawa", "Miyazaki",
  "Tarantino", "Lynch", "Bergman", "Fellini", "Wong", "Zhang", "Léaud", "Truffaut", "Kieślowski", "Ozu" }
local GIVEN = { "凯歌", "艺谋", "家卫", "Stanley", "Christopher", "Ridley", "David", "Akira", "Hayao",
  "Quentin", "Ingmar", "Federico", "François", "Krzysztof", "Yasujirō", "Sofia", "Agnès", "Céline" }
local WORDS = { "霸王别姬", "Farewell", "My", "Concubine", "这个杀手不太冷", "Léon", "肖申克的救赎",
  "The", "Shawshank", "Redemption", "泰坦尼克号", "Titanic", "罗马假日", "Roman", "Holiday", "唐伯虎点秋香",
  "Flirting", "Scholar", "乱世佳人", "Gone", "with", "the", "Wind", "喜剧之王", "King", "of", "Comedy" }
local CATS = { "剧情", "爱情", "喜剧", "动作", "犯罪", "战争", "传记", "历史", "冒险", "奇幻" }

-- A generator of 1..n, seeded by k.
local function lcg(k)
  local seed = (k * 2654435761 + 7) % 4294967296
  return function(n)
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed // 65536 % n + 1
  end
end

local function phrase(rand, n)
  local t = {}
  for i = 1, n do t[i] = WORDS[rand(#WORDS)] end
  return table.concat(t, " ")
end

-- The directors of movie id, in page order: 1-3 names, unique to the movie (the id is in each).
function M.directors(id)
  local rand = lcg(id * 31 + 1)
  local list = {}
  for i = 1, rand(3) do
    list[i] = string.format("%s %s %d-%d", GIVEN[rand(#GIVEN)], SURNAMES[rand(#SURNAMES)], id, i)
  end
  return list
end

local HEAD = [[<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>%s - Scrape | Movie</title>
<link href="/css/app.css" rel="stylesheet"><link href="/css/chunk-vendors.css" rel="stylesheet">
<script>window.__CONFIG__ = {"api": "/api/movie", "limit": 10, "theme": "light"};</script>
</head>
<body>
<div id="app"><div data-v-74e8b908="" class="el-row" id="header"><div class="el-col el-col-24">
<div class="logo"><a href="/"><img src="/img/logo.png" class="logo-image"><span class="logo-title">Scrape</span></a>
</div></div></div>
]]

local FOOT = [[<footer><p class="note">%s</p></footer>
<script src="/js/chunk-vendors.js"></script><script src="/js/app.js"></script>
</body>
</html>
]]

-- List page n of a site with `lists` list pages: movies (n-1)*10+1 .. n*10.
function M.list_page(n, lists)
  local rand = lcg(n * 7 + 3)
  local out = { string.format(HEAD, "page " .. n), '<div data-v-7f856186="" id="index">\n' }
  local function w(s) out[#out + 1] = s end
  for c = 1, M.PER_LIST do
    local id = (n - 1) * M.PER_LIST + c
    w('<div data-v-7f856186="" class="el-card item m-t is-hover-shadow"><div class="el-card__body">')
    w('<div data-v-7f856186="" class="el-row"><div class="el-col el-col-24 el-col-xs-8 el-col-sm-6 el-col-md-4">')
    w(string.format('<a data-v-7f856186="" href="/detail/%d" class="">', id))
    w(string.format('<img data-v-7f856186="" src="https://p0.meituan.net/movie/%08x.jpg@464w_644h_1e_1c" ',
      rand(2147483647)))
    w('class="cover"></a></div>\n<div class="p-h el-col el-col-24 el-col-xs-9 el-col-sm-13 el-col-md-16">')
    w(string.format('<a data-v-7f856186="" href="/detail/%d" class="name"><h2 data-v-7f856186="" class="m-b-sm">',
      id))
    w(string.format('%s - %s</h2></a>\n<div data-v-7f856186="" class="categories">', phrase(rand, 2), phrase(rand, 3)))
    for _ = 1, rand(3) do
      w('<button data-v-7f856186="" type="button" class="el-button category el-button--primary el-button--mini">')
      w(string.format('<span>%s</span></button>', CATS[rand(#CATS)]))
    end
    w(string.format('</div>\n<div data-v-7f856186="" class="m-v-sm info"><span>中国大陆</span><span> / </span>'
      .. '<span>%d 分钟</span></div>\n</div>', 90 + rand(90)))
    w(string.format('<div class="el-col el-col-24 el-col-xs-5 el-col-sm-5 el-col-md-4">'
      .. '<p data-v-7f856186="" class="score m-t-md m-b-n-sm">%d.%d</p></div></div></div></div>\n',
      7 + rand(3) - 1, rand(10) - 1))
  end
  w('<div class="el-pagination is-background"><ul class="el-pager">')
  for p = math.max(1, n - 4), math.min(lists, n + 5) do
    w(string.format('<li class="number"><a href="/page/%d">%d</a></li>', p, p))
  end
  w('</ul></div>\n</div>\n')
  w(string.format(FOOT, phrase(rand, 30)))
  return table.concat(out)
end

-- Detail page of movie id: about 16 KB.
function M.detail_page(id)
  local rand = lcg(id * 13 + 5)
  local title = phrase(rand, 3)
  local out = { string.format(HEAD, title), '<div data-v-63864230="" id="detail">\n' }
  local function w(s) out[#out + 1] = s end
  w('<div data-v-63864230="" class="el-row"><div class="el-col el-col-18 el-col-offset-3">')
  w('<div data-v-63864230="" class="el-card item"><div class="el-card__body">')
  w(string.format('<img data-v-63864230="" src="https://p0.meituan.net/movie/%08x.jpg" class="cover">',
    rand(2147483647)))
  w(string.format('<a data-v-63864230="" href="/detail/%d" class="router-link-active"><h2 data-v-63864230="" '
    .. 'class="m-b-sm">%s</h2></a>\n<div data-v-63864230="" class="categories">', id, title))
  for _ = 1, rand(3) do
    w(string.format('<button type="button" class="el-button category el-button--primary el-button--mini">'
      .. '<span>%s</span></button>', CATS[rand(#CATS)]))
  end
  w(string.format('</div>\n<div class="m-v-sm info"><span>%d 分钟</span></div>\n', 90 + rand(90)))
  w('<div data-v-63864230="" class="drama"><h3 data-v-63864230="">剧情简介</h3><p data-v-63864230="">')
  w(phrase(rand, 80))
  w('</p></div>\n')
  w('<div data-v-63864230="" class="directors el-row"><h3 data-v-63864230="">导演</h3>\n')
  for _, name in ipairs(M.directors(id)) do
    w(string.format('<div data-v-63864230="" class="director el-col el-col-4"><div class="el-card is-hover-shadow">'
      .. '<div class="el-card__body"><img src="https://p0.meituan.net/movie/d%d.jpg" class="image">'
      .. '<p data-v-63864230="" class="name text-center m-b-none m-t-xs">%s</p></div></div></div>\n', id, name))
  end
  w('</div>\n<div data-v-63864230="" class="actors el-row"><h3 data-v-63864230="">演员</h3>\n')
  for a = 1, 12 do
    w(string.format('<div data-v-63864230="" class="actor el-col el-col-4"><div class="el-card is-hover-shadow">'
      .. '<div class="el-card__body"><img src="https://p0.meituan.net/movie/a%d-%d.jpg" class="image">'
      .. '<p data-v-63864230="" class="name text-center m-b-none m-t-xs">%s</p>'
      .. '<p data-v-63864230="" class="role text-center m-b-none">饰：%s</p></div></div></div>\n',
      id, a, phrase(rand, 2), phrase(rand, 1)))
  end
  w('</div>\n<div data-v-63864230="" class="photos el-row"><h3 data-v-63864230="">剧照</h3>\n')
  for p = 1, 12 do
    w(string.format('<div class="photo el-col el-col-4"><div class="el-image"><img src="https://p1.meituan.net/'
      .. 'movie/%d-%d-%08x.jpg@106w_106h_1e_1c" class="el-image__inner" style="object-fit: cover;"></div></div>\n',
      id, p, rand(2147483647)))
  end
  w('</div>\n<div class="comments">')
  -- Reviews pad the page to about 16 KB, as the real site's scripts and markup do.
  local size = 0
  for _, s in ipairs(out) do size = size + #s end
  local r = 0
  while size < 15500 do
    r = r + 1
    local s = string.format('<div class="comment"><span class="user">user%d</span><p class="text">%s</p></div>\n',
      rand(99999), phrase(rand, 12))
    w(s)
    size = size + #s
  end
  w('</div>\n</div></div></div></div>\n</div>\n')
  w(string.format(FOOT, phrase(rand, 10)))
  return table.concat(out)
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- Writes the site to root/www (www/page/N, www/detail/ID) and the answer root/answer.tsv
-- ("ID\tNAME|NAME" a line). Returns { lists, details, bytes = total bytes, detail_bytes =
-- bytes of the detail pages }. (The bench writes the start lists: they hold nginx's port.)
function M.write(root, lists)
  assert(os.execute(string.format("mkdir -p '%s/www/page' '%s/www/detail'", root, root)))
  local details = lists * M.PER_LIST
  local bytes, detail_bytes = 0, 0
  local answer = {}
  for n = 1, lists do
    local body = M.list_page(n, lists)
    write(string.format("%s/www/page/%d", root, n), body)
    bytes = bytes + #body
  end
  for id = 1, details do
    local body = M.detail_page(id)
    write(string.format("%s/www/detail/%d", root, id), body)
    bytes = bytes + #body
    detail_bytes = detail_bytes + #body
    answer[id] = id .. "\t" .. table.concat(M.directors(id), "|")
  end
  write(root .. "/answer.tsv", table.concat(answer, "\n") .. "\n")
  return { lists = lists, details = details, bytes = bytes, detail_bytes = detail_bytes }
end

return M
