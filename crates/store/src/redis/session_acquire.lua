-- Fleet-wide session cap: take a lease for a session unless its user is at the cap.
-- KEYS[1] hark:{uid}:sessions   sorted set: session id -> lease expiry (ms, server clock)
-- ARGV[1] session id   ARGV[2] max open sessions   ARGV[3] lease ttl (ms)
-- Returns {granted 0|1, open sessions, ms until the soonest lease expires (when refused)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Leases of crashed pods expire by themselves: prune them first.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
local open = redis.call('ZCARD', KEYS[1])
if held or open < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  if not held then open = open + 1 end
  -- The set lives as long as its longest lease.
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[1], last[2])
  return {1, open, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, open, tonumber(first[2]) - now}
