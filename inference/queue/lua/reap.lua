-- Put jobs whose lease lapsed back at the front of their line. A job that already ran
-- `max_attempts` times (or whose metadata is broken) is leased to the reaper instead and
-- returned, so the caller can dead-letter it and answer with an error through settle;
-- if the caller dies first, its lease lapses again and the next reaper does it.
-- ARGV: prefix, reaper_id, max_attempts, lease_s, limit
-- Returns {requeued_count, {{jid, data, attempt, 0, enqueued_at}, ...}} (rows as take's).
local now = now_s()
local max_attempts, lease_s = tonumber(ARGV[3]), tonumber(ARGV[4])
local lapsed = redis.call('ZRANGEBYSCORE', K.leases(), '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
local dying = {}
local back = {}
for _, jid in ipairs(lapsed) do
  local f = redis.call('HMGET', K.job(jid), 'data', 'g', 'u', 'a', 'eq')
  if not f[1] or redis.call('EXISTS', K.done(jid)) == 1 then
    forget(jid)  -- already answered or cancelled
  elseif (tonumber(f[4]) or 0) >= max_attempts or not f[2] or not f[3] then
    redis.call('ZADD', K.leases(), now + lease_s, jid)
    redis.call('HSET', K.lease_owner(), jid, ARGV[2])
    table.insert(dying, {jid, f[1], tonumber(f[4]) or 0, 0, f[5] or ''})
  else
    drop_lease(jid)
    local eq = tonumber(f[5])
    if not eq or eq ~= eq then eq = 0 end  -- NaN would break table.sort's ordering
    table.insert(back, {jid, f[2], f[3], eq})
  end
end
-- One batch's leases lapse at the same instant and ZRANGEBYSCORE orders ties by job id,
-- which is random: push the newest first so each line is back in submission order.
table.sort(back, function(x, y)
  if x[4] ~= y[4] then return x[4] > y[4] end
  return x[1] > y[1]
end)
for _, b in ipairs(back) do enqueue(b[1], b[2], b[3], true) end
if #back > 0 then wake() end
return {#back, dying}
