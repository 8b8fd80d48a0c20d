-- One admin change, atomically (see mod.rs for the key layout).
-- KEYS: epoch, rev, tenants, log, leases, tenant hash
-- ARGV: tenant, if_match ('' for none), op (require|token|revoke), require (1|0),
--       sha256, created_ms, expires_ms, changes channel
-- Returns {'ok', rev, now_ms, epoch, {replica, deadline_ms, ...}, require, sha256,
--         created_ms, expires_ms} (the tenant after the change),
--         {'noepoch'} or {'conflict', current_revision}.
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  return {'noepoch'}
end
local current = tonumber(redis.call('HGET', KEYS[6], 'revision') or '0')
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= current then
  return {'conflict', current}
end
local t = redis.call('HMGET', KEYS[6], 'require', 'sha256', 'created_ms', 'expires_ms')
local require, sha, created, expires = t[1] or '0', t[2] or '', t[3] or '', t[4] or ''
if ARGV[3] == 'require' then
  require = ARGV[4]
elseif ARGV[3] == 'token' then
  sha, created, expires = ARGV[5], ARGV[6], ARGV[7]
elseif ARGV[3] == 'revoke' then
  sha, created, expires = '', '', ''
else
  return redis.error_reply('unknown operation ' .. ARGV[3])
end
local rev = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[6], 'require', require, 'sha256', sha, 'created_ms', created,
  'expires_ms', expires, 'revision', rev)
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 1000, rev .. '-0', 'tenant', ARGV[1],
  'require', require, 'sha256', sha, 'created_ms', created, 'expires_ms', expires)
redis.call('PUBLISH', ARGV[8], rev)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local leases = redis.call('ZRANGEBYSCORE', KEYS[5], now, '+inf', 'WITHSCORES')
return {'ok', rev, now, epoch, leases, require, sha, created, expires}
