-- wrk script: POST the body file named by the BENCH_BODY environment variable and print a
-- machine-readable summary line. Error responses are counted by wrk itself
-- (summary.errors.status, the "Non-2xx or 3xx responses" line: every status >= 400); a
-- Lua `response` hook would count exactly the non-2xx ones but halves wrk's throughput,
-- so the harness instead checks before each run that the endpoint answers 200.
local body_file = assert(os.getenv("BENCH_BODY"), "set BENCH_BODY to the request body file")
local f = assert(io.open(body_file, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d," ..
    "\"connect\":%d,\"read\":%d,\"write\":%d,\"timeout\":%d,\"status\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50.0), latency:percentile(99.0),
    e.connect, e.read, e.write, e.timeout, e.status))
end
