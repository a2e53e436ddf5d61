-- Quota lease and renewal: settle a session's usage, then grant up to a chunk.
-- KEYS[1] hark:{uid}:quota:<window start s>   hash: used, leased (ms of audio)
-- KEYS[2] hark:{uid}:sessions (optional): also refresh this session's cap lease
-- ARGV[1] limit ms   ARGV[2] chunk ms   ARGV[3] account expiry (unix ms: window end + margin)
-- ARGV[4] used ms to settle   ARGV[5] lease ms released by the settle
-- ARGV[6] session id   ARGV[7] session lease ttl ms   (with KEYS[2])
-- Returns {granted ms, ms left in the window after the grant}.
local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
local leased = tonumber(redis.call('HGET', KEYS[1], 'leased') or '0')
leased = math.max(0, leased - tonumber(ARGV[5]))
used = used + tonumber(ARGV[4])
-- Outstanding leases count as used: a crashed pod's lease is never settled.
local available = tonumber(ARGV[1]) - used - leased
local granted = 0
if available > 0 then
  granted = math.min(tonumber(ARGV[2]), available)
  leased = leased + granted
end
redis.call('HSET', KEYS[1], 'used', used, 'leased', leased)
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
if #KEYS > 1 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[7]), ARGV[6])
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[2], last[2])
end
return {granted, available - granted}
