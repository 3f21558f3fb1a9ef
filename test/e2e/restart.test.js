// kill -9 the node while a client sends; restart on the same data; every message acknowledged as
// stored reaches its recipient exactly once, in seq order, with no gap.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { startNode, Client } = require('./harness');

const TOTAL = Number(process.env.E2E_RESTART_MSGS || 300);

/// A sender that pipelines sends, retries unacknowledged nonces after reconnecting, and records
/// every `stored`.
class Sender {
  constructor(user, to) { this.user = user; this.to = to; this.stored = new Map(); this.next = 0; }
  async attach(port) {
    this.c = new Client(port);
    await this.c.open();
    this.c.send({ op: 'identify', ref: 'id', token: this.user.token, device: 'sender' });
    await this.c.waitFor((f) => f.op === 'ready');
    this.c.ws.on('message', (data) => {
      for (const line of data.toString().split('\n')) {
        const f = JSON.parse(line);
        if (f.op === 'stored') this.stored.set(f.nonce, f);
      }
    });
    for (const n of this.pending()) this.c.send({ op: 'send', ref: n, to: this.to.id, nonce: n, body: `body of ${n}` });
  }
  pending() { const p = []; for (let i = 0; i < this.next; i++) if (!this.stored.has(`k${i}`)) p.push(`k${i}`); return p; }
  sendMore(n) {
    for (let i = 0; i < n && this.next < TOTAL; i++, this.next++)
      if (this.c.ws.readyState === 1) this.c.send({ op: 'send', ref: `k${this.next}`, to: this.to.id, nonce: `k${this.next}`, body: `body of k${this.next}` });
  }
}

test('every message acknowledged before a kill -9 is delivered exactly once after restart', async () => {
  let node = await startNode();
  const dir = node.dir;
  const alice = await node.user('alice');
  const bob = await node.user('bob');
  // Bob's device exists and has acknowledged nothing.
  const b0 = new Client(node.port);
  await b0.open();
  b0.send({ op: 'identify', ref: 'id', token: bob.token, device: 'phone' });
  await b0.waitFor((f) => f.op === 'ready');
  b0.close();

  const s = new Sender(alice, bob);
  await s.attach(node.port);
  // Send in bursts and kill the node mid-stream, with sends in flight.
  while (s.next < TOTAL / 2) { s.sendMore(20); await new Promise((r) => setTimeout(r, 5)); }
  await node.kill('SIGKILL');
  const ackedBeforeKill = new Set(s.stored.keys());
  assert.ok(ackedBeforeKill.size > 0, 'some messages were acknowledged before the kill');

  node = await startNode({ dir });
  await s.attach(node.port);
  while (s.next < TOTAL) { s.sendMore(20); await new Promise((r) => setTimeout(r, 5)); }
  const deadline = Date.now() + 20000;
  while (s.stored.size < TOTAL && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    for (const n of s.pending()) s.c.send({ op: 'send', ref: n, to: bob.id, nonce: n, body: `body of ${n}` });
  }
  assert.equal(s.stored.size, TOTAL, 'every send was eventually stored');

  const b = new Client(node.port);
  await b.open();
  b.send({ op: 'identify', ref: 'id', token: bob.token, device: 'phone', last_inbox_seq: '0' });
  await b.waitFor((f) => f.op === 'ready');
  const lastId = [...s.stored.values()].reduce((m, f) => (BigInt(f.seq) > BigInt(m.seq) ? f : m)).id;
  await b.waitFor((f) => f.op === 'deliver' && f.id === lastId, 20000);
  await new Promise((r) => setTimeout(r, 300));
  const got = b.deliveries();
  const byNonce = new Map();
  for (const d of got) {
    assert.ok(!byNonce.has(d.nonce), `nonce ${d.nonce} delivered twice`);
    byNonce.set(d.nonce, d);
  }
  for (const n of ackedBeforeKill) assert.ok(byNonce.has(n), `acknowledged ${n} was lost`);
  for (const [n, f] of s.stored) assert.equal(byNonce.get(n).id, f.id, `${n} delivered with another id`);
  const seqs = got.map((d) => Number(d.seq));
  seqs.forEach((q, i) => assert.equal(q, i + 1, 'conversation seq is dense and in order'));
  const inbox = got.map((d) => Number(d.inbox_seq));
  inbox.forEach((q, i) => assert.equal(q, i + 1, 'inbox_seq is dense and in order'));
  assert.equal(got.length, TOTAL);
  b.close(); s.c.close();
  await node.kill('SIGTERM');
});
