// End-to-end: a device that stops reading is disconnected as too slow (its outbound queue
// overflows, then its write stalls), and nothing it missed is lost: a resume replays it all.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { startNode, connect } = require('./harness');

async function metric(node, name) {
  const m = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
  const hit = m.match(new RegExp(`^${name} (\\d+)`, 'm'));
  return hit ? Number(hit[1]) : 0;
}

test('a reader that stops reading is closed as too slow and gets everything on resume', async () => {
  const node = await startNode({
    args: ['--gateway.outbound_bytes_max=524288', '--gateway.write_stall_ms=2000',
      '--gateway.sends_per_sec=100000', '--gateway.sends_burst=100000'],
  });
  try {
    const alice = await node.user('alice');
    const bob = await node.user('bob');
    const a = await connect(node.port, alice);
    const b = await connect(node.port, bob, 'slow');
    const start = BigInt(b.frames.find((f) => f.op === 'ready').inbox_seq);
    b.ws.pause(); // the phone stops reading: TCP buffers fill, then the node's queue
    // Random bodies: permessage-deflate would shrink a repeated character to almost nothing.
    const body = () => require('node:crypto').randomBytes(11000).toString('base64');
    const ids = [];
    let closed = false;
    // Batches of ten (150 KB) keep the sender's queue below the limit (it gets `stored`, not
    // copies of what it sent, but a few frames are no test of the bound); the
    // silent reader's grows past its TCP buffers, then past the limit.
    for (let batch = 0; batch < 200 && !closed; batch++) {
      const refs = [];
      for (let i = 0; i < 10; i++) {
        const n = batch * 10 + i;
        a.send({ op: 'send', ref: `s${n}`, to: bob.id, nonce: `slow-${n}`, body: body() });
        refs.push(`s${n}`);
      }
      for (const ref of refs) {
        const st = await a.waitFor((f) => f.ref === ref, 10000);
        assert.equal(st.op, 'stored');
        ids.push(st.id);
      }
      closed = (await metric(node, 'agner_ws_slow_reader_closed_total')) > 0;
    }
    // The node gives up on the stalled connection within the write-stall deadline.
    for (let i = 0; i < 100 && !closed; i++) {
      await new Promise((r) => setTimeout(r, 100));
      closed = (await metric(node, 'agner_ws_slow_reader_closed_total')) > 0;
    }
    assert.ok(closed, `the slow reader was not closed after ${ids.length} messages`);
    b.ws.terminate();
    // Everything stored for it is still there: a resume from where it started replays it all,
    // in order, once.
    // The replay goes out in pages (the session asks for the next one when its queue drained);
    // messages sent meanwhile come after it, in order.
    const r = await connect(node.port, bob, 'slow', { last_inbox_seq: start.toString() });
    for (let i = 0; i < 5; i++) {
      a.send({ op: 'send', ref: `late${i}`, to: bob.id, nonce: `late-${i}`, body: `late ${i}` });
      ids.push((await a.waitFor((f) => f.ref === `late${i}`, 10000)).id);
    }
    await r.waitFor((f) => f.op === 'deliver' && f.id === ids[ids.length - 1], 30000);
    await new Promise((res) => setTimeout(res, 200)); // anything extra would arrive now
    const got = r.deliveries().filter((f) => BigInt(f.inbox_seq) > start).map((f) => f.id);
    assert.equal(got.length, ids.length);
    assert.deepEqual(got, ids);
    const seqs = r.deliveries().map((f) => BigInt(f.inbox_seq));
    for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1n);
    a.close(); r.close();
  } finally {
    await node.kill('SIGTERM');
  }
});
