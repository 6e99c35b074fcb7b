-- forage.cli: the `forage` command line. bin/forage only finds the modules and calls main;
-- each command is a module forage.cli.<name> returning
--   { summary = "one line for `forage --help`",
--     configure = function(command) ... end,   -- adds its arguments to an argparse command
--     run = function(parsed, cli) ... end }     -- returns the exit code
-- so a new command is one more file and one more name in COMMANDS.
local M = {}

-- Exit codes, the same for every command (docs/cli.md).
M.OK, M.FAILED, M.USAGE, M.NO_PROXY, M.INTERRUPTED, M.TERMINATED = 0, 1, 2, 3, 130, 143

-- The commands in the order `forage --help` lists them.
local COMMANDS = { "crawl", "status", "merge", "demo", "fetch", "shell", "version", "help" }

-- Writes "forage: <message>" on stderr and returns code, for `return cli.fail(...)`.
function M.fail(code, message)
  io.stderr:write("forage: ", message, "\n")
  return code
end

-- An error message without the "file.lua:12: " prefixes Lua adds: the user did not write
-- those files, and an installed rock's paths say nothing to them.
function M.clean_error(err)
  local message = tostring(err)
  repeat
    local rest = message:match("^[^%s:]+%.lua:%d+: (.*)$") or message:match("^[^%s:]*forage:%d+: (.*)$")
    message = rest or message
  until not rest
  return message
end

local function load_argparse()
  local ok, argparse = pcall(require, "argparse")
  if not ok then
    if tostring(argparse):find("interrupted!$") then error(argparse, 0) end   -- Ctrl-C, not a missing module
    return nil
  end
  return argparse
end

-- Builds the parser; returns it and the commands' modules by name.
local function build_parser(argparse)
  local version = require("forage").version
  local parser = argparse("forage")
    :description("forage " .. version .. ": crawl with spiders in Lua through sticky proxies; fetch a page and "
      .. "try selectors on it before a spider is written.")
    :epilog("Exit codes: 0 ok; 1 a fatal error (crawl), the fetch failed, no match, a non-2xx status or an\n"
      .. "unreadable file (fetch); 2 bad arguments or a bad spider; 3 no live proxy left (crawl).\n"
      .. "`forage help COMMAND` or `forage COMMAND --help` shows a command's options.")
    :command_target("command")
    :help_max_width(100)
    :help_description_margin(32)
  parser:flag("--version", "Print forage's version and exit."):action(function()
    io.stdout:write("forage ", version, "\n")
    os.exit(M.OK)
  end)
  -- argparse leaves on a parse error with its own exit code; forage's is 2, with the usage
  -- of the command that was being parsed.
  parser.error = function(p, message)
    error({ usage_error = message, usage = p:get_usage() }, 0)
  end
  local modules, commands = {}, {}
  for _, name in ipairs(COMMANDS) do
    local module = require("forage.cli." .. name)
    local command = parser:command(name):summary(module.summary):description(module.description or module.summary)
    module.configure(command)
    modules[name], commands[name] = module, command
  end
  return parser, modules, commands
end

-- Runs the command line argv (a list of strings, as `arg`); returns the exit code.
local function main(argv)
  local argparse = load_argparse()
  if not argparse then
    return M.fail(M.FAILED, "the command line needs the argparse module (Debian: apt install lua-argparse; "
      .. "or luarocks install argparse)")
  end
  local list = table.move(argv, 1, #argv, 1, {})
  local parser, modules, commands = build_parser(argparse)
  local ok, parsed = pcall(parser.parse, parser, list)
  if not ok then
    if type(parsed) == "table" and parsed.usage_error then
      -- argparse quotes what it refuses in full; a message repeats at most 60 bytes of it
      local message = parsed.usage_error:gsub("'([^']*)'", function(s)
        if #s > 60 or s:find("[^\32-\126]") then return require("forage.args").show(s) end
      end)
      io.stderr:write("forage: ", message, "\n", parsed.usage, "\n")
      return M.USAGE
    end
    error(parsed, 0)
  end
  local context = { parser = parser, commands = commands, argv = list }
  return modules[parsed.command].run(parsed, M, context)
end

-- The same; a Ctrl-C outside a crawl's own handling (Lua's "interrupted!", say while the
-- spider file loads) is exit 130 with one line, not a traceback.
function M.main(argv)
  local ok, code = xpcall(main, function(e)
    if type(e) == "string" and e:find("interrupted!$") then return e end
    return debug.traceback(e, 2)
  end, argv)
  if ok then return code end
  if type(code) == "string" and code:find("interrupted!$") then return M.fail(M.INTERRUPTED, "interrupted") end
  error(code, 0)
end

return M
