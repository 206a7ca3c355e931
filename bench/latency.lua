-- wrk's --latency stops at p99; this prints p50, p99, p99.9 and the max (microseconds) in one
-- line that bench/read.sh parses. Headers given with -H still apply.
done = function(summary, latency, requests)
  io.write(string.format("LATENCY_US p50=%d p99=%d p999=%d max=%d\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
