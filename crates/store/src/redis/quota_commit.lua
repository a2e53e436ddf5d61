-- Quota commit: settle a session's usage for good and give back the rest of its lease.
-- KEYS[1] hark:{uid}:quota:<window start s>   hash: used, leased (ms of audio)
-- ARGV[1] used ms   ARGV[2] lease ms released   ARGV[3] account expiry (unix ms)
-- Returns the ms of lease given back unused.
local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
local leased = tonumber(redis.call('HGET', KEYS[1], 'leased') or '0')
local settle_used = tonumber(ARGV[1])
local release = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'used', used + settle_used, 'leased', math.max(0, leased - release))
-- An expiry in the past deletes the account: a window long over keeps nothing.
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return math.max(0, release - settle_used)
