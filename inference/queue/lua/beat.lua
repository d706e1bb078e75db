#!lua flags=allow-oom
-- A worker's heartbeat: its record (with a TTL) and its entry in the index, and the queue
-- at a glance for its metrics, in one call. allow-oom: a Redis at its maxmemory must not
-- make every live worker look dead (others would take all their jobs), and a worker must
-- be able to start and drain the queue, which is what frees the memory.
-- ARGV: prefix, worker_id, info_json, ttl_s, stale_s
-- Returns {pending, guilds waiting, workers alive}.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[4])
redis.call('SET', K.worker(ARGV[2]), ARGV[3], 'EX', math.floor(ttl) + 1)
redis.call('ZADD', K.workers(), fmt(now + ttl), ARGV[2])
redis.call('ZREMRANGEBYSCORE', K.workers(), '-inf', now - tonumber(ARGV[5]))
return {
  tonumber(redis.call('GET', K.pending()) or '0') or 0,
  redis.call('LLEN', K.guild_ring()),
  redis.call('ZCOUNT', K.workers(), now, '+inf'),
}
