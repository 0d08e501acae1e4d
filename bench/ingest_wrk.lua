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
  lines = {}
  for line in io.lines(args[1] .. "." .. id) do
    lines[#lines + 1] = line
  end
  next_line = 0
  exhausted = 0
end

function request()
  next_line = next_line + 1
  if next_line > #lines then
    -- Out of distinct deliveries: send the first again (a duplicate); counted, and the script
    -- sizes the files so that this does not happen.
    next_line = 1
    exhausted = exhausted + 1
  end
  local signature, body = lines[next_line]:match("^([^\t]+)\t(.*)$")
  return wrk.format("POST", "/webhooks/argyle",
    { ["Content-Type"] = "application/json", ["X-Argyle-Signature"] = signature }, body)
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
