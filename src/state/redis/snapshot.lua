-- The whole state, atomically.
-- KEYS: epoch, rev, tenants; ARGV: tenant key prefix ('{prefix}:t:')
-- Returns {'ok', epoch, rev, name, mode, sha256, created_ms, expires_ms, prev_sha256,
--         prev_created_ms, prev_expires_ms, prev_until_ms, revision, ...} or {'noepoch'}.
-- A hash written before `mode` existed gives its mode from `require`.
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  return {'noepoch'}
end
local out = {'ok', epoch, tonumber(redis.call('GET', KEYS[2]) or '0')}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local t = redis.call('HMGET', ARGV[1] .. name, 'require', 'mode', 'sha256', 'created_ms',
    'expires_ms', 'prev_sha256', 'prev_created_ms', 'prev_expires_ms', 'prev_until_ms',
    'revision')
  local mode = t[2] or ''
  if mode == '' then
    mode = (t[1] == '1') and 'on' or 'off'
  end
  table.insert(out, name)
  table.insert(out, mode)
  for i = 3, 10 do
    table.insert(out, t[i] or '')
  end
end
return out
