-- forage help [COMMAND]: the list of commands, or one command's usage and options.
local M = {
  summary = "Show the commands, or one command's options.",
}

function M.configure(command)
  command:argument("name", "The command to explain."):args("?"):argname("COMMAND")
end

function M.run(parsed, cli, context)
  if parsed.name == nil then
    io.stdout:write(context.parser:get_help(), "\n")
    return cli.OK
  end
  local command = context.commands[parsed.name]
  if not command then
    return cli.fail(cli.USAGE, "unknown command " .. require("forage.args").show(parsed.name)
      .. " (`forage help` lists them)")
  end
  io.stdout:write(command:get_help(), "\n")
  return cli.OK
end

return M
