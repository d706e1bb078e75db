#!lua flags=allow-oom
-- Fair batched dispatch: take up to B jobs (interactive ones first; background ones only
-- in the slots they leave), round robin across guilds (a guild of weight
-- w gets up to w jobs per turn), and across users within a guild; lease each one.
-- ARGV: prefix, worker_id, batch_size, lease_s, capabilities ('caption,ocr,...'),
--       max_scan, max_skip, fresh (1: this call starts a batch; 0: it tops one up),
--       isolate_after (crashes after which a job runs alone)
-- Returns {now, {{jid, data, attempt, expired (0/1), enqueued_at, isolated (0/1)}, ...}}.
--
-- Blame (see reap.lua): field `k` counts the started batches a job was in when they took
-- their worker down. A job recovered from one crash runs again in an ordinary fair batch:
-- most crashes (an OOM kill, a lost host, a deploy) are nobody's fault, and recovering
-- them one job per batch would cost a batch per job. A job with `isolate_after` crashes
-- or more (it was in batches that killed workers more than once) is a suspect and runs
-- alone, as a batch of one, so that a job that crashes the process each time blames only
-- itself: its former neighbours each succeed alone, and it dies alone, the only crash the
-- reaper charges towards the dead letters. So a suspect is taken only by a fresh call
-- that has taken nothing yet, and ends that call; met later, it waits at the head of its
-- line.
--
-- Jobs past their deadline are leased and returned flagged `expired` (the worker answers
-- them "timed out" without running them); they do not count toward B. A job whose task
-- this worker cannot serve stays at the head of its user's line for a worker that can;
-- if none comes it expires at its deadline, so nothing waits forever. `max_scan` bounds
-- the work one call does when the line is full of expired or cancelled ids. Looking past
-- a user whose next job this worker cannot serve has its own, larger bound `max_skip`:
-- were it charged to `max_scan`, one guild of many such users would use up the call and
-- leave another guild's servable job for a later call, after an idle wait.
local wid, B, lease_s = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local max_scan, max_skip = tonumber(ARGV[6]), tonumber(ARGV[7])
local fresh = ARGV[8] == '1'
local isolate_after = tonumber(ARGV[9]) or 2
local alone = false  -- a suspect was met: this call takes nothing more
local caps = {}
for t in string.gmatch(ARGV[5], '[^,]+') do caps[t] = true end
local now = now_s()
local rows = {}
local taken, scanned, skipped = 0, 0, 0

local function lease(jid, f, expired, isolated)
  local a = bump_attempt(jid, 1)
  redis.call('ZADD', K.leases(), now + lease_s, jid)
  redis.call('HSET', K.lease_owner(), jid, wid)
  table.insert(rows, {jid, f[1], a, expired, f[4] or '', isolated or 0})
end

-- The served user is at the head of guild_users(g): pop its job and rotate the user to
-- the back (or drop it when its line is now empty).
local function pop_head(g, u)
  local uq, gu = K.user_queue(g, u), K.guild_users(g)
  redis.call('LPOP', uq)
  count_queued(g, -1)
  if redis.call('LLEN', uq) == 0 then
    redis.call('LPOP', gu)
  else
    redis.call('LMOVE', gu, gu, 'LEFT', 'RIGHT')
  end
end

local function serve_guild(g, quota)
  local gu = K.guild_users(g)
  local got, blocked = 0, 0
  while got < quota and scanned < max_scan and skipped < max_skip and not alone do
    local u = redis.call('LINDEX', gu, 0)
    if not u or blocked >= redis.call('LLEN', gu) then break end
    local jid = redis.call('LINDEX', K.user_queue(g, u), 0)
    if not jid then
      scanned = scanned + 1
      redis.call('LPOP', gu)  -- repair a broken invariant rather than loop on it
    else
      local f = redis.pcall('HMGET', K.job(jid), 'data', 't', 'dl', 'eq', 'k')
      if f.err then f = {} end  -- a planted key of another type: a stale id, dropped
      local dl = tonumber(f[3] or '')
      if not f[1] then
        scanned = scanned + 1
        pop_head(g, u)  -- finished or cancelled while it waited: a stale id
      elseif dl and dl < now then
        scanned = scanned + 1
        pop_head(g, u)
        lease(jid, f, 1)
      elseif f[2] and not caps[f[2]] then
        blocked, skipped = blocked + 1, skipped + 1
        redis.call('LMOVE', gu, gu, 'LEFT', 'RIGHT')
      elseif (tonumber(f[5]) or 0) >= isolate_after then
        alone = true
        if fresh and taken == 0 then
          pop_head(g, u)
          lease(jid, f, 0, 1)
          got, taken = got + 1, taken + 1
        end
        break
      else
        scanned = scanned + 1
        pop_head(g, u)
        lease(jid, f, 0)
        got, taken, blocked = got + 1, taken + 1, 0
      end
    end
  end
  return got
end

-- One ring, round robin: interactive guilds first (their order mirrored for places, see
-- lib.lua), then, with batch slots left, background work (alt text) in its own ring.
local function serve_ring(ring, ordered)
  local stalled = 0
  while taken < B and scanned < max_scan and skipped < max_skip and not alone do
    local g = redis.call('LINDEX', ring, 0)
    if not g then break end
    local got = serve_guild(g, math.min(weight_of(g), B - taken))
    if alone and got == 0 then break end  -- the guild keeps its turn for its suspect
    if redis.call('LLEN', K.guild_users(g)) == 0 then
      redis.call('LPOP', ring)
      ring_drop(g)
    else
      redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
      if ordered then ring_back(g) end
    end
    if got == 0 then stalled = stalled + 1 else stalled = 0 end
    -- a whole turn of the ring without taking anything: nothing here for this worker
    if stalled >= redis.call('LLEN', ring) then break end
  end
end

serve_ring(K.guild_ring(), true)
serve_ring(K.background_ring(), false)
return {fmt(now), rows}
