// End-to-end: a real agner-node, real sockets, the `ws` npm client, real HMAC tokens.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { startNode, Client, connect } = require('./harness');

let node, alice, bob, carol;

test.before(async () => {
  node = await startNode();
  alice = await node.user('alice');
  bob = await node.user('bob');
  carol = await node.user('carol');
});
test.after(async () => { await node.kill('SIGTERM'); });

test('a sent message is stored, delivered to the recipient and to the sender\'s other devices', async () => {
  const a = await connect(node.port, alice);
  const laptop = await connect(node.port, alice, 'laptop');
  const b = await connect(node.port, bob);
  a.send({ op: 'send', ref: 's1', to: bob.id, nonce: 'n-basic', body: 'hello bob' });
  const stored = await a.waitFor((f) => f.ref === 's1');
  assert.equal(stored.op, 'stored');
  assert.equal(stored.seq, '1');
  const d = await b.waitFor((f) => f.op === 'deliver' && f.id === stored.id);
  assert.equal(d.body, 'hello bob');
  assert.equal(d.from, alice.id);
  assert.equal(d.conversation, stored.conversation);
  b.send({ op: 'ack', inbox_seq: d.inbox_seq });
  // The sender's other device gets a copy (multi-device sync); the sending device gets the
  // message's place in alice's inbox with `stored` instead, and acks it like a delivery.
  const copy = await laptop.waitFor((f) => f.op === 'deliver' && f.id === stored.id);
  assert.equal(copy.body, 'hello bob');
  assert.equal(copy.inbox_seq, stored.inbox_seq);
  a.send({ op: 'ack', inbox_seq: stored.inbox_seq });
  await new Promise((r) => setTimeout(r, 200)); // a copy to the sending device would be here by now
  assert.equal(a.deliveries().filter((f) => f.id === stored.id).length, 0);
  a.close(); laptop.close(); b.close();
});

test('an offline recipient gets the message when it connects', async () => {
  const a = await connect(node.port, alice, 'phone2');
  const b0 = await connect(node.port, carol, 'tablet'); // registers the device, then leaves
  const last = b0.frames.find((f) => f.op === 'ready').inbox_seq;
  b0.close(); await b0.waitClosed();
  a.send({ op: 'send', ref: 'o1', to: carol.id, nonce: 'n-offline', body: 'while you were out' });
  const stored = await a.waitFor((f) => f.ref === 'o1' && f.op === 'stored');
  const b = await connect(node.port, carol, 'tablet');
  const d = await b.waitFor((f) => f.op === 'deliver' && f.id === stored.id);
  assert.equal(d.body, 'while you were out');
  assert.ok(BigInt(d.inbox_seq) > BigInt(last));
  a.close(); b.close();
});

test('resume after a reconnect replays exactly the missing messages, in order, once', async () => {
  const a = await connect(node.port, alice, 'phone3');
  let b = await connect(node.port, bob, 'resume-dev');
  const start = BigInt(b.frames.find((f) => f.op === 'ready').inbox_seq);
  const ids = [];
  for (let i = 0; i < 5; i++) {
    a.send({ op: 'send', ref: `r${i}`, to: bob.id, nonce: `n-resume-${i}`, body: `m${i}` });
    ids.push((await a.waitFor((f) => f.ref === `r${i}` && f.op === 'stored')).id);
  }
  await b.waitFor((f) => f.op === 'deliver' && f.id === ids[4]);
  const got = b.deliveries().filter((f) => BigInt(f.inbox_seq) > start);
  const third = got.find((f) => f.id === ids[2]);
  b.send({ op: 'ack', inbox_seq: third.inbox_seq });
  b.close(); await b.waitClosed();
  for (let i = 5; i < 8; i++) {
    a.send({ op: 'send', ref: `r${i}`, to: bob.id, nonce: `n-resume-${i}`, body: `m${i}` });
    ids.push((await a.waitFor((f) => f.ref === `r${i}` && f.op === 'stored')).id);
  }
  b = await connect(node.port, bob, 'resume-dev', { last_inbox_seq: third.inbox_seq });
  await b.waitFor((f) => f.op === 'deliver' && f.id === ids[7]);
  await new Promise((r) => setTimeout(r, 200)); // anything extra would arrive now
  const replayed = b.deliveries().filter((f) => ids.includes(f.id)).map((f) => f.id);
  assert.deepEqual(replayed, ids.slice(3));
  const seqs = b.deliveries().map((f) => BigInt(f.inbox_seq));
  for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1n);
  a.close(); b.close();
});

test('a retried nonce gets the same message and is delivered once', async () => {
  const a = await connect(node.port, alice, 'phone4');
  const b = await connect(node.port, bob, 'dup-dev');
  a.send({ op: 'send', ref: 'd1', to: bob.id, nonce: 'n-dup', body: 'once' });
  a.send({ op: 'send', ref: 'd2', to: bob.id, nonce: 'n-dup', body: 'once' });
  const s1 = await a.waitFor((f) => f.ref === 'd1');
  const s2 = await a.waitFor((f) => f.ref === 'd2');
  assert.equal(s1.op, 'stored');
  assert.deepEqual([s2.id, s2.seq], [s1.id, s1.seq]);
  a.send({ op: 'send', ref: 'd3', to: bob.id, nonce: 'n-dup', body: 'once' });
  assert.equal((await a.waitFor((f) => f.ref === 'd3')).id, s1.id);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(b.deliveries().filter((f) => f.id === s1.id).length, 1);
  a.close(); b.close();
});

test('history pages by seq, before and after, with a more flag', async () => {
  const a = await connect(node.port, carol, 'hist');
  let conv;
  for (let i = 1; i <= 7; i++) {
    a.send({ op: 'send', ref: `h${i}`, to: bob.id, nonce: `n-hist-${i}`, body: `h${i}` });
    conv = (await a.waitFor((f) => f.ref === `h${i}` && f.op === 'stored')).conversation;
  }
  a.send({ op: 'history', ref: 'p1', conversation: conv, limit: 3 });
  const p1 = await a.waitFor((f) => f.ref === 'p1');
  assert.deepEqual(p1.messages.map((m) => m.seq), ['5', '6', '7']);
  assert.equal(p1.more, true);
  a.send({ op: 'history', ref: 'p2', conversation: conv, before: '5', limit: 3 });
  assert.deepEqual((await a.waitFor((f) => f.ref === 'p2')).messages.map((m) => m.body), ['h2', 'h3', 'h4']);
  a.send({ op: 'history', ref: 'p3', conversation: conv, after: '6' });
  const p3 = await a.waitFor((f) => f.ref === 'p3');
  assert.deepEqual(p3.messages.map((m) => m.seq), ['7']);
  assert.equal(p3.more, false);
  a.close();
});

test('someone else\'s conversation is forbidden', async () => {
  const c = await connect(node.port, carol, 'snoop');
  const ab = (BigInt(1) << 62n) | (BigInt(alice.id) << 31n) | BigInt(bob.id);
  c.send({ op: 'history', ref: 'x', conversation: ab.toString() });
  const e = await c.waitFor((f) => f.ref === 'x');
  assert.equal(e.op, 'error');
  assert.equal(e.code, 'forbidden');
  c.send({ op: 'send', ref: 'y', to: '999999', nonce: 'n', body: 'to nobody' });
  assert.equal((await c.waitFor((f) => f.ref === 'y')).code, 'not_found');
  c.close();
});

async function expectClose(setup, code) {
  const c = new Client(node.port);
  await c.open();
  await setup(c);
  const closed = await c.waitClosed();
  assert.equal(closed.code, code, `expected close ${code}, got ${JSON.stringify(closed)}; frames ${JSON.stringify(c.frames)}`);
  return c;
}

test('bad input gets a documented error or close code and the node keeps serving', async () => {
  const c = await expectClose(async (c) => c.send('{"op":"identify",'), 4002);
  assert.equal(c.frames.find((f) => f.op === 'error').code, 'bad_json');
  await expectClose(async (c) => c.send({ op: 'send', to: bob.id, nonce: 'n', body: 'x' }), 4003);
  await expectClose(async (c) => c.send({ op: 'identify', token: 'v1.1.9999999999.forged' }), 4004);
  await expectClose(async (c) => c.send({ op: 'identify', token: alice.token.replace(/^v1\.\d+/, `v1.${bob.id}`) }), 4004);
  await expectClose(async (c) => c.send({ op: 'identify', token: 'dev:mallory' }), 4004); // dev mode is off
  await expectClose(async (c) => c.ws.send(Buffer.from([1, 2, 3]), { binary: true }), 4002);
  await expectClose(async (c) => c.send('x'.repeat(40 * 1024)), 1009);
  await expectClose(async (c) => c.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false }), 1007);

  const a = await connect(node.port, alice, 'bad');
  const before = await (async () => { a.send({ op: 'heartbeat', ref: 'hb0' }); return a.waitFor((f) => f.ref === 'hb0'); })();
  assert.equal(before.op, 'heartbeat_ack');
  const cases = [
    [{ op: 'dance', ref: 'b1' }, 'unknown_op'],
    [{ op: 'send', ref: 'b2', to: 'bob', nonce: 'n', body: 'x' }, 'bad_request'],
    [{ op: 'send', ref: 'b3', to: bob.id, body: 'x' }, 'bad_request'],
    [{ op: 'send', ref: 'b4', to: bob.id, nonce: 'n', body: 5 }, 'bad_request'],
    [{ op: 'history', ref: 'b5', conversation: '1', limit: 1000 }, 'bad_request'],
    [{ op: 'ack', ref: 'b6' }, 'bad_request'],
  ];
  for (const [frame, code] of cases) {
    a.send(frame);
    const e = await a.waitFor((f) => f.ref === frame.ref);
    assert.equal(e.op, 'error');
    assert.equal(e.code, code, JSON.stringify(frame));
  }
  // None of that changed anything: the conversation still ends where it did, and we are connected.
  a.send({ op: 'send', ref: 'ok', to: bob.id, nonce: 'n-after-bad', body: 'still here' });
  assert.equal((await a.waitFor((f) => f.ref === 'ok')).op, 'stored');
  a.send({ op: 'identify', ref: 'again', token: alice.token });
  assert.equal((await a.waitClosed()).code, 4005);
});

test('compression, fragments, ping and the close handshake interoperate with ws', async () => {
  const metric = async (name) => {
    const m = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
    const hit = m.match(new RegExp(`^${name} (\\d+)`, 'm'));
    return hit ? Number(hit[1]) : 0;
  };
  const inflated0 = await metric('agner_ws_messages_inflated_total');
  const deflated0 = await metric('agner_ws_messages_deflated_total');
  const a = await connect(node.port, alice, 'wire');
  const b = await connect(node.port, bob, 'wire');
  // ws offers permessage-deflate by default; the node takes it without context takeover.
  assert.match(a.ws.extensions, /permessage-deflate/);
  // ws compresses messages of 1 KiB and more; the node compresses its messages of 256 B and more.
  const body = 'compress me, '.repeat(600);
  a.send({ op: 'send', ref: 'z1', to: bob.id, nonce: 'n-deflate', body });
  const stored = await a.waitFor((f) => f.ref === 'z1');
  assert.equal(stored.op, 'stored');
  assert.equal((await b.waitFor((f) => f.op === 'deliver' && f.id === stored.id)).body, body);
  assert.ok(await metric('agner_ws_messages_inflated_total') > inflated0, 'the node inflated a client message');
  assert.ok(await metric('agner_ws_messages_deflated_total') > deflated0, 'the node deflated a server message');
  // A message in three fragments is one frame of the protocol.
  a.ws.send('{"op":"heart', { fin: false });
  a.ws.send('beat","ref":', { fin: false });
  a.ws.send('"frag"}', { fin: true });
  assert.equal((await a.waitFor((f) => f.ref === 'frag')).op, 'heartbeat_ack');
  // Pings are answered with pongs carrying the same data.
  const pong = new Promise((resolve) => a.ws.once('pong', (d) => resolve(d.toString())));
  a.ws.ping('are you there');
  assert.equal(await pong, 'are you there');
  // A client that closes gets its close code back.
  a.ws.close(1000, 'bye');
  assert.equal((await a.waitClosed()).code, 1000);
  // A client without compression works the same.
  const plain = new Client(node.port);
  plain.ws = null;
  const WebSocket = require('ws');
  const ws = new WebSocket(`ws://127.0.0.1:${node.port}/v1/ws`, 'agner.v1', { perMessageDeflate: false });
  const hello = await new Promise((resolve, reject) => {
    ws.once('message', (d) => resolve(JSON.parse(d.toString().split('\n')[0])));
    ws.once('error', reject);
  });
  assert.equal(hello.op, 'hello');
  assert.equal(ws.extensions, '');
  ws.close();
  b.close();
});

test('an upgrade the node cannot honour gets an HTTP error, not a WebSocket', async () => {
  const http = require('node:http');
  const ask = (headers) => new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: node.port, path: '/v1/ws', headers });
    req.on('response', (res) => { res.resume(); resolve(res.statusCode); });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res.statusCode); });
    req.on('error', reject);
    req.end();
  });
  const base = { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' };
  assert.equal(await ask({ ...base, 'Sec-WebSocket-Version': '8' }), 426);
  assert.equal(await ask({ ...base, 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'nope' }), 400);
  assert.equal(await ask({ ...base, 'Sec-WebSocket-Version': '13' }), 101);
});

test('health, readiness and metrics answer', async () => {
  assert.equal((await fetch(`http://127.0.0.1:${node.port}/healthz`)).status, 200);
  assert.equal((await fetch(`http://127.0.0.1:${node.port}/readyz`)).status, 200);
  const m = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
  assert.match(m, /agner_chat_messages_stored_total \d+/);
  assert.match(m, /agner_ws_connections /);
  assert.equal((await node.admin('GET', '/admin/status')).status, 200);
  const r = await fetch(`http://127.0.0.1:${node.port}/admin/status`);
  assert.equal(r.status, 401);
});

test('bulk user creation takes a prefix and a count, and refuses a bad count or start', async () => {
  const ok = await node.admin('POST', '/admin/users?prefix=bulk&count=3&start=7');
  assert.equal(ok.status, 200);
  assert.equal(ok.body.users.length, 3);
  const again = await node.admin('POST', '/admin/users?prefix=bulk&count=3&start=7');
  assert.deepEqual(again.body.users, ok.body.users); // the same names are the same users
  for (const q of ['count=0', 'count=x', 'count=1000001', 'count=2&start=x', 'count=2&start=4294967296', '']) {
    const r = await node.admin('POST', `/admin/users?prefix=bulk&${q}`);
    assert.equal(r.status, 400, q);
    assert.equal(r.body.error, 'bad_request', q);
  }
});
