-- The whole state, atomically.
-- KEYS: epoch, rev, tenants; ARGV: tenant key prefix ('{prefix}:t:')
-- Returns {'ok', epoch, rev, name, require, sha256, created_ms, expires_ms, revision, ...}
--         or {'noepoch'}.
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  return {'noepoch'}
end
local out = {'ok', epoch, tonumber(redis.call('GET', KEYS[2]) or '0')}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local t = redis.call('HMGET', ARGV[1] .. name, 'require', 'sha256', 'created_ms',
    'expires_ms', 'revision')
  table.insert(out, name)
  for i = 1, 5 do
    table.insert(out, t[i] or '')
  end
end
return out
