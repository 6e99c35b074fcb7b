-- forage version: prints the version of the forage modules it runs with.
local M = {
  summary = "Print forage's version.",
}

function M.configure(_) end

function M.run(_, cli)
  io.stdout:write("forage ", require("forage").version, "\n")
  return cli.OK
end

return M
