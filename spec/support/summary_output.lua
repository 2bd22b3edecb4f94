-- Busted output handler for spec/support/run_specs.sh.
--
-- One line per finished test, written and flushed as it happens, so a spec
-- file that crashes or times out still leaves a record of what ran:
--   SY-RUN <name>   (when a test starts; the last one names a crash's culprit)
--   SY-OK <name> (<seconds>)      SY-SKIP <name>      SY-FAIL <name>
-- Failure details follow a SY-FAIL line, each line prefixed with "! ".
-- The last line is the file's totals, which the runner sums:
--   SY-SUMMARY passed=N failed=N errors=N skipped=N
-- Use: busted -o spec/support/summary_output.lua FILE
return function(options)
  local busted = require("busted")
  local handler = require("busted.outputHandlers.base")()
  local verbose = options and options.verbose

  local function emit(line)
    io.stdout:write(line, "\n")
    io.stdout:flush()
  end

  local function message_text(message)
    if type(message) == "string" then return message end
    if message == nil then return "nil error" end
    local ok, pretty = pcall(require, "pl.pretty")
    if ok then return pretty.write(message) end
    return tostring(message)
  end

  local function location(element, trace)
    local t = (element and element.trace) or trace
    if t and t.short_src then return t.short_src .. ":" .. tostring(t.currentline) end
    return nil
  end

  local function details(kind, element, message, trace)
    emit("SY-FAIL " .. handler.getFullName(element))
    local where = location(element, trace)
    emit("! " .. kind .. ": " .. handler.getFullName(element) .. (where and ("  (" .. where .. ")") or ""))
    for line in (message_text(message) .. "\n"):gmatch("([^\n]*)\n") do
      emit("!   " .. line)
    end
    if verbose and trace and trace.traceback then
      for line in (trace.traceback .. "\n"):gmatch("([^\n]*)\n") do emit("!   " .. line) end
    end
  end

  local function on_test_start(element)
    emit("SY-RUN " .. handler.getFullName(element))
    return nil, true
  end

  local function on_test_end(element, _, status)
    local name = handler.getFullName(element)
    if status == "success" then
      emit(string.format("SY-OK %s (%.2fs)", name, element.duration or 0))
    elseif status == "pending" then
      emit("SY-SKIP " .. name)
    end
    return nil, true
  end

  -- Every failure and error, inside a test or in setup/teardown/describe/file.
  local function on_failure(element, _, message, trace)
    details("FAILED", element, message, trace)
    return nil, true
  end
  local function on_error(element, _, message, trace)
    details("ERROR", element, message, trace)
    return nil, true
  end

  local function on_suite_end()
    emit(string.format("SY-SUMMARY passed=%d failed=%d errors=%d skipped=%d",
      handler.successesCount, handler.failuresCount, handler.errorsCount, handler.pendingsCount))
    return nil, true
  end

  busted.subscribe({ "test", "start" }, on_test_start, { predicate = handler.cancelOnPending })
  busted.subscribe({ "test", "end" }, on_test_end, { predicate = handler.cancelOnPending })
  busted.subscribe({ "failure" }, on_failure)
  busted.subscribe({ "error" }, on_error)
  busted.subscribe({ "suite", "end" }, on_suite_end)

  return handler
end
