// A lenient Express 4 upstream for tests/lenient.rs, with Express's defaults:
// case-insensitive routing and a non-strict trailing slash. The bulk-update handlers
// take POST only and look the tenant up as backends that merge path and query
// parameters do (the `client` query parameter wins), comparing it as MySQL's default
// collations do (case, accents, compatibility forms and trailing space ignored).
//
// Every request is recorded as it arrived, and so is every executed bulk update;
// GET /__log returns them as JSON (and is not recorded). Each test request carries
// X-Authgate-Case, so the test can tell its cases apart. Heads that Node's parser
// rejects (methods it does not know, such as `post` or `FOO`) never reach Express;
// they are recorded from the raw bytes, so the test still sees that they arrived.
//
// Usage: node app.js   (listens on 127.0.0.1, port 0, and prints the port on stdout)
'use strict';

const express = require('express');

const requests = [];
const executions = [];

function foldTenant(name) {
  return name
    .normalize('NFKD')
    .replace(/[\p{M}\p{Cf}]/gu, '')
    .toLowerCase()
    .trim();
}

const app = express();

app.use((req, res, next) => {
  if (req.path !== '/__log') {
    requests.push({
      case: req.get('x-authgate-case') ?? null,
      method: req.method,
      target: req.originalUrl,
      authorization: req.get('authorization') ?? null,
      x_original_url: req.get('x-original-url') ?? null,
      x_rewrite_url: req.get('x-rewrite-url') ?? null,
    });
  }
  next();
});

function batchUpdate(req, res) {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    const client = typeof req.query.client === 'string' ? req.query.client : req.params.client;
    executions.push({
      case: req.get('x-authgate-case') ?? null,
      method: req.method,
      path: req.path,
      client,
      tenant: foldTenant(client),
      authorization: req.get('authorization') ?? null,
      body_bytes: Buffer.concat(chunks).length,
    });
    res
      .type('application/xml')
      .send(
        `<response><success>true</success><batchStatus>http://backend/m2/${encodeURIComponent(client)}` +
          '/profile/batchStatus?batchId=1</batchStatus><message>Batch submitted for processing</message></response>',
      );
  });
}

app.post('/m2/:client/profile/batchUpdate', batchUpdate);
app.post('/m2/:client/v2/profile/batchUpdate', batchUpdate);
app.all('/m2/:client/profile/update', (req, res) => res.json({ updated: true }));
app.get('/rest/v1/profiles/:id', (req, res) => res.json({ id: req.params.id, client: req.query.client }));
app.get('/__log', (req, res) => res.json({ requests, executions }));

const server = app.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`);
});

// Node hands CONNECT to a 'connect' listener instead of Express; answer it as Express
// would a method no route takes.
server.on('connect', (req, socket) => {
  requests.push({
    case: req.headers['x-authgate-case'] ?? null,
    method: req.method,
    target: req.url,
    authorization: req.headers.authorization ?? null,
    x_original_url: req.headers['x-original-url'] ?? null,
    x_rewrite_url: req.headers['x-rewrite-url'] ?? null,
  });
  socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
});

server.on('clientError', (err, socket) => {
  const head = err.rawPacket ? err.rawPacket.toString('latin1') : '';
  const line = head.split('\r\n', 1)[0];
  const found = /^x-authgate-case:[ \t]*(.*?)[ \t]*$/im.exec(head);
  requests.push({
    case: found ? found[1] : null,
    method: line.split(' ', 1)[0] || null,
    target: line.split(' ')[1] ?? null,
    authorization: /^authorization:[ \t]*(.*?)[ \t]*$/im.exec(head)?.[1] ?? null,
    x_original_url: /^x-original-url:[ \t]*(.*?)[ \t]*$/im.exec(head)?.[1] ?? null,
    x_rewrite_url: /^x-rewrite-url:[ \t]*(.*?)[ \t]*$/im.exec(head)?.[1] ?? null,
    rejected_by_node: err.code ?? String(err),
  });
  if (socket.writable) {
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  } else {
    socket.destroy();
  }
});
