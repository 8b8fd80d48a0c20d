-- One admin change, atomically (see mod.rs for the key layout).
-- KEYS: epoch, rev, tenants, log, leases, tenant hash
-- ARGV: tenant, if_match ('' for none), op (mode|token|revoke), mode (off|report|on),
--       sha256, created_ms, expires_ms, previous_valid_until_ms ('' for no overlap),
--       changes channel
-- Returns {'ok', rev, now_ms, epoch, {replica, deadline_ms, ...}, mode, sha256,
--         created_ms, expires_ms, prev_sha256, prev_created_ms, prev_expires_ms,
--         prev_until_ms} (the tenant after the change),
--         {'noepoch'} or {'conflict', current_revision}.
-- The hash keeps `require` (1 exactly in mode on) for readers older than `mode`; the
-- previous token's deadline is state: every replica compares it with its clock.
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  return {'noepoch'}
end
local current = tonumber(redis.call('HGET', KEYS[6], 'revision') or '0')
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= current then
  return {'conflict', current}
end
local t = redis.call('HMGET', KEYS[6], 'require', 'mode', 'sha256', 'created_ms',
  'expires_ms', 'prev_sha256', 'prev_created_ms', 'prev_expires_ms', 'prev_until_ms')
local mode = t[2] or ''
if mode == '' then
  mode = (t[1] == '1') and 'on' or 'off'
end
local sha, created, expires = t[3] or '', t[4] or '', t[5] or ''
local psha, pcreated, pexpires, puntil = t[6] or '', t[7] or '', t[8] or '', t[9] or ''
if ARGV[3] == 'mode' then
  mode = ARGV[4]
elseif ARGV[3] == 'token' then
  -- The token being replaced overlaps the new one until min(deadline, its expiry), if
  -- that is after the new one's creation; any older token ends here.
  psha, pcreated, pexpires, puntil = '', '', '', ''
  if ARGV[8] ~= '' and sha ~= '' then
    local deadline = ARGV[8]
    if tonumber(expires) < tonumber(deadline) then
      deadline = expires
    end
    if tonumber(deadline) > tonumber(ARGV[6]) then
      psha, pcreated, pexpires, puntil = sha, created, expires, deadline
    end
  end
  sha, created, expires = ARGV[5], ARGV[6], ARGV[7]
elseif ARGV[3] == 'revoke' then
  sha, created, expires = '', '', ''
  psha, pcreated, pexpires, puntil = '', '', '', ''
else
  return redis.error_reply('unknown operation ' .. ARGV[3])
end
local require = (mode == 'on') and '1' or '0'
local rev = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[6], 'require', require, 'mode', mode, 'sha256', sha,
  'created_ms', created, 'expires_ms', expires, 'prev_sha256', psha,
  'prev_created_ms', pcreated, 'prev_expires_ms', pexpires, 'prev_until_ms', puntil,
  'revision', rev)
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 1000, rev .. '-0', 'tenant', ARGV[1],
  'require', require, 'mode', mode, 'sha256', sha, 'created_ms', created,
  'expires_ms', expires, 'prev_sha256', psha, 'prev_created_ms', pcreated,
  'prev_expires_ms', pexpires, 'prev_until_ms', puntil)
redis.call('PUBLISH', ARGV[9], rev)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local leases = redis.call('ZRANGEBYSCORE', KEYS[5], now, '+inf', 'WITHSCORES')
return {'ok', rev, now, epoch, leases, mode, sha, created, expires, psha, pcreated,
  pexpires, puntil}
