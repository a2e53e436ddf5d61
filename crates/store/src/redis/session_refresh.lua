-- Extend a running session's lease; re-add it if it had expired (it is running).
-- KEYS[1] hark:{uid}:sessions   ARGV[1] session id   ARGV[2] lease ttl (ms)
-- Returns 1 if the lease was still held, 0 if it had to be re-added.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
if held then return 1 end
return 0
