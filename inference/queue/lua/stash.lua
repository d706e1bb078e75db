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

-- A picture a queued or running job still needs (pinned by submit.lua) is never dropped:
-- it moves to the young end of the index instead (submit.lua also made it live at least
-- as long as the job may). Returns whether `member` may go.
local function may_drop(member)
  if kind ~= 'picture' or not redis.call('HGET', K.picture_pins(), member) then return true end
  if redis.call('EXISTS', K.stash(kind, member)) == 0 then
    -- A pin outliving its picture (its job deleted by hand, or settled by an older
    -- worker that does not unpin): nothing is kept to protect, so the pin goes too.
    redis.call('HDEL', K.picture_pins(), member)
    return true
  end
  redis.call('ZADD', index, now, member)
  return false
end

-- Values past their TTL are gone already; settle their accounts (a bounded number a call).
for _, member in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now - ttl, 'LIMIT', 0, 64)) do
  if may_drop(member) then stash_forget(kind, member) end
end
-- Larger than the whole budget: not kept (and what is kept under this id stays as it is).
local size = string.len(value)
redis.call('SET', K.stash_budget(kind), budget)
if size > budget then return tonumber(redis.call('GET', total) or '0') end
-- Stored again: counted once, and never sooner gone than it was (a job may pin it).
local kept_ms = -1
if redis.call('HEXISTS', sizes, id) == 1 then
  kept_ms = redis.call('PTTL', K.stash(kind, id))
  stash_forget(kind, id)
end
redis.call('SET', K.stash(kind, id), value, 'EX', math.max(1, math.floor(ttl)))
if kept_ms > 0 then redis.call('PEXPIRE', K.stash(kind, id), kept_ms, 'GT') end
redis.call('HSET', sizes, id, size)
redis.call('ZADD', index, now, id)
local used = redis.call('INCRBY', total, size)
-- Oldest first, past the pinned ones (each looked at once: when every older picture is
-- pinned, the store stays over budget until their jobs end; MAX_QUEUED_BYTES bounds that).
local looked, members = 0, redis.call('ZCARD', index)
while used > budget and looked < members do
  local oldest = redis.call('ZRANGE', index, 0, 0)[1]
  if not oldest or oldest == id then break end
  looked = looked + 1
  if may_drop(oldest) then
    stash_forget(kind, oldest)
    used = tonumber(redis.call('GET', total) or '0')
  end
end
return used
