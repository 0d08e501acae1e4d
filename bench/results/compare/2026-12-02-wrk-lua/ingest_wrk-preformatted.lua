-- wrk script for bench/ingest_wrk.sh: each thread posts its own file of pre-signed, distinct
-- deliveries ("<signature>\t<body>" per line), once each, in order; done() prints a JSON summary.
local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  -- Every request is formatted here, before the clock starts: request() then only hands out the
  -- next string, so the generator spends its CPU on the sockets, not on Lua patterns and
  -- string building (it shares the cores with the server and the database).
  requests = {}
  for line in io.lines(args[1] .. "." .. id) do
    local signature, body = line:match("^([^\t]+)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", "/webhooks/argyle",
      { ["Content-Type"] = "application/json", ["X-Argyle-Signature"] = signature }, body)
  end
  next_request = 0
  exhausted = 0
end

function request()
  next_request = next_request + 1
  if next_request > #requests then
    -- Out of distinct deliveries: send the first again (a duplicate); counted, and the script
    -- sizes the files so that this does not happen.
    next_request = 1
    exhausted = exhausted + 1
  end
  return requests[next_request]
end

function done(summary, latency, requests)
  local wrapped = 0
  for _, thread in ipairs(threads) do
    wrapped = wrapped + thread:get("exhausted")
  end
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "non_2xx": %d, "socket_errors": %d, "timeouts": %d, ' ..
    '"wrapped": %d, "p50_ms": %.2f, "p90_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f}\n',
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout,
    wrapped, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
