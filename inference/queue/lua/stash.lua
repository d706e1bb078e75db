-- Keep one value of a bounded kind ("picture", "result"): stored with a TTL, and the kind
-- held within a byte budget by dropping its oldest values first. Never relies on Redis's
-- own eviction, which the queue forbids (maxmemory-policy noeviction).
-- ARGV: prefix, kind, id, value, ttl_s, max_bytes
-- Returns the kind's total bytes after the call.
local kind, id, value = ARGV[2], ARGV[3], ARGV[4]
local ttl, budget = tonumber(ARGV[5]), tonumber(ARGV[6])
local index, sizes, total = K.stash_index(kind), K.stash_sizes(kind), K.stash_bytes(kind)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6

local function forget(member)
  local size = tonumber(redis.call('HGET', sizes, member) or '0') or 0
  redis.call('HDEL', sizes, member)
  redis.call('ZREM', index, member)
  redis.call('DEL', K.stash(kind, member))
  redis.call('DECRBY', total, size)
end

-- Values past their TTL are gone already; settle their accounts (a bounded number a call).
for _, member in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now - ttl, 'LIMIT', 0, 64)) do
  forget(member)
end
if redis.call('HEXISTS', sizes, id) == 1 then forget(id) end  -- stored again: counted once

local size = string.len(value)
if size > budget then return tonumber(redis.call('GET', total) or '0') end
redis.call('SET', K.stash(kind, id), value, 'EX', math.max(1, math.floor(ttl)))
redis.call('HSET', sizes, id, size)
redis.call('ZADD', index, now, id)
local used = redis.call('INCRBY', total, size)
while used > budget do
  local oldest = redis.call('ZRANGE', index, 0, 0)[1]
  if not oldest or oldest == id then break end
  forget(oldest)
  used = tonumber(redis.call('GET', total) or '0')
end
return used
