-- wrk script: POST /api/v2/agentbox.php?api=change_status with the agentbox headers, for bench/agentbox_http.py.
--
--   wrk -t T -c C -d 10s -s bench/lua/agentbox_change_status.lua http://127.0.0.1:PORT -- SLOTS_FILE T
--
-- SLOTS_FILE has one slot a line: "<wolkvox_server> <token> <agent_id> <first status> <second status>". Each wrk
-- thread takes the lines i with i % T == its index and sends them round robin; each slot alternates its two
-- statuses, so every request of a slot is a real state change of its agent (ready <-> aux) as long as a slot never
-- has two requests in flight, which the driver ensures by giving each thread several times more slots than
-- connections (wrk's Lua cannot tie a slot to a connection). The request is written the way Wolkvox documents it:
-- POST, parameters in the query string, no body, both headers.
--
-- done() prints one line, "WRK_RESULT {json}", that the driver reads (latencies in microseconds).

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

local slots = {}
local next_slot = 1

local function change_status(server, token, agent, status)
  local path = "/api/v2/agentbox.php?api=change_status&agent_id=" .. agent .. "&status=" .. status
  return wrk.format("POST", path, { ["wolkvox-token"] = token, ["wolkvox_server"] = server })
end

function init(args)
  local path, thread_count = args[1], tonumber(args[2])
  local line_index = 0
  for line in io.lines(path) do
    if line_index % thread_count == thread_index then
      local server, token, agent, first, second = line:match("^(%S+) (%S+) (%S+) (%S+) (%S+)$")
      if server == nil then
        error("bad slot line: " .. line)
      end
      table.insert(slots, {
        change_status(server, token, agent, first),
        change_status(server, token, agent, second),
        turn = 1,
      })
    end
    line_index = line_index + 1
  end
  if #slots == 0 then
    error("no slot for thread " .. thread_index)
  end
end

function request()
  local slot = slots[next_slot]
  next_slot = next_slot % #slots + 1
  local bytes = slot[slot.turn]
  slot.turn = 3 - slot.turn
  return bytes
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "non_2xx": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
