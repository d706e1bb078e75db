#!lua flags=allow-oom
-- Put jobs whose lease lapsed, or whose worker's heartbeat is gone, back at the front of
-- their line, counting blame:
--   * a job taken but never started (the pipelined worker's batch taken ahead; no `r`
--     mark from begin.lua) is blameless: back in line as if released, the take not
--     counted as an attempt;
--   * a job of the started batch gets one more crash (`k`); with `max_attempts` crashes,
--     the last one in a batch of one (it ran alone: nothing else can have done it), it
--     is leased to the reaper instead and returned, so the caller can dead-letter it and
--     answer with an error through settle (a job whose metadata is broken, too); if the
--     caller dies first, its lease lapses again and the next reaper does it.
-- A crash in a batch of several never dead-letters anyone: it may be any one job's fault,
-- or nobody's. take.lua runs a job alone once it has crashed `isolate_after` times (2),
-- so a job that kills every batch it is in dies alone at its `max_attempts`-th crash
-- (the worker lowers isolate_after below 2 when max_attempts is under 3).
-- ARGV: prefix, reaper_id, max_attempts, lease_s, limit, by_heartbeat (1/0), presumed_dead
--       (a worker id whose leases count as lapsed whatever its heartbeat says, or '')
-- Returns {requeued_count, {{jid, data, attempt, 0, enqueued_at}, ...}} (rows as take's).
local now = now_s()
local max_attempts, lease_s, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local by_heartbeat, presumed_dead = ARGV[6] == '1', ARGV[7]
local lapsed = redis.call('ZRANGEBYSCORE', K.leases(), '-inf', now, 'LIMIT', 0, limit)
-- A worker whose heartbeat is gone (SIGKILL, OOM kill, a lost host) loses its leases now,
-- not when each lapses: a live worker refreshes its heartbeat every fraction of its
-- lifetime, even in the middle of a long batch, so only the dead (or frozen) lose theirs.
-- An owner missing from the index counts as dead too. The running set is small (workers
-- times batch size), so reading it whole each pass is cheap. A worker just started passes
-- its own id as `presumed_dead`: a fresh process holds no lease, so any under its id are a
-- predecessor's with the same configured WORKER_ID, whose heartbeat it has just renewed.
-- A worker that has just lived through a Redis outage passes by_heartbeat 0 until every
-- live worker has had time to renew its heartbeat, or it would rob them all.
if by_heartbeat or presumed_dead ~= '' then
  local seen = {}
  for _, jid in ipairs(lapsed) do seen[jid] = true end
  local alive = {}
  local owners = redis.call('HGETALL', K.lease_owner())
  for i = 1, #owners, 2 do
    local jid, w = owners[i], owners[i + 1]
    if alive[w] == nil then
      if w == presumed_dead then
        alive[w] = false
      elseif by_heartbeat then
        local beat = tonumber(redis.call('ZSCORE', K.workers(), w) or '')
        alive[w] = beat ~= nil and beat >= now
      else
        alive[w] = true
      end
    end
    if not alive[w] and not seen[jid] and #lapsed < limit then
      seen[jid] = true
      table.insert(lapsed, jid)
    end
  end
end
local dying = {}
local back = {}
for _, jid in ipairs(lapsed) do
  local f = redis.call('HMGET', K.job(jid), 'data', 'g', 'u', 'a', 'eq', 'r', 'k')
  local started = tonumber(f[6])
  local crashes = math.floor(tonumber(f[7]) or 0)
  if started then crashes = crashes + 1 end
  if not f[1] or redis.call('EXISTS', K.done(jid)) == 1 then
    forget(jid)  -- already answered or cancelled
  elseif (started == 1 and crashes >= max_attempts) or not f[2] or not f[3] then
    -- `r` and `k` stay: should this reaper die too, the next one reaches the same verdict
    redis.call('ZADD', K.leases(), now + lease_s, jid)
    redis.call('HSET', K.lease_owner(), jid, ARGV[2])
    table.insert(dying, {jid, f[1], tonumber(f[4]) or 0, 0, f[5] or ''})
  else
    drop_lease(jid)
    if started then
      redis.call('HSET', K.job(jid), 'k', crashes)
      redis.call('HDEL', K.job(jid), 'r')
    else
      bump_attempt(jid, -1)
    end
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
