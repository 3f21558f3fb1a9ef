// Starts real agner-node processes and drives them with the `ws` npm client. Every wait is
// bounded; every node is killed when its test ends.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');

const NODE_BIN = process.env.E2E_AGNER_NODE;
if (!NODE_BIN) throw new Error('set E2E_AGNER_NODE to the agner-node binary');

// Data directories this process created: removed when it exits (the nodes are dead by then).
const createdDirs = new Set();
process.on('exit', () => {
  for (const d of createdDirs) fs.rmSync(d, { recursive: true, force: true });
});

/// Starts a node on a free port with its own data directory (or `dir`, to restart on the same
/// data); resolves once it is ready.
async function startNode({ dir, args = [], timeoutMs = 20000 } = {}) {
  if (!dir) {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agner-e2e-'));
    createdDirs.add(dir);
  }
  const proc = spawn(NODE_BIN, ['--http.port=0', `--store.dir=${dir}`, '--log.format=json', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node not ready in ${timeoutMs} ms:\n${log}`)), timeoutMs);
    proc.stderr.on('data', (d) => {
      log += d.toString();
      const m = log.match(/chat node ready on 127\.0\.0\.1:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`node exited ${code}:\n${log}`)); });
  });
  const node = {
    proc, port, dir, get log() { return log; },
    adminToken: fs.readFileSync(path.join(dir, 'admin.token'), 'utf8'),
    async admin(method, pathAndQuery) {
      const r = await fetch(`http://127.0.0.1:${port}${pathAndQuery}`, {
        method, headers: { authorization: `Bearer ${node.adminToken}` },
      });
      return { status: r.status, body: await r.json() };
    },
    async user(name) {
      const u = await node.admin('POST', `/admin/users?name=${name}`);
      const t = await node.admin('POST', `/admin/tokens?name=${name}`);
      return { id: u.body.user, token: t.body.token, name };
    },
    kill(signal = 'SIGKILL') {
      return new Promise((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
        proc.once('exit', (code, sig) => resolve({ code, sig }));
        proc.kill(signal);
      });
    },
  };
  return node;
}

/// A WebSocket client that records every server frame (splitting batched frames on '\n').
class Client {
  constructor(port) {
    this.port = port;
    this.frames = [];
    this.closed = null;
    this.listeners = new Set();
  }

  open(protocols = 'agner.v1') {
    this.ws = new WebSocket(`ws://127.0.0.1:${this.port}/v1/ws`, protocols);
    this.ws.on('message', (data, isBinary) => {
      for (const line of data.toString().split('\n')) this.frames.push(JSON.parse(line));
      this.notify();
    });
    this.ws.on('close', (code, reason) => { this.closed = { code, reason: reason.toString() }; this.notify(); });
    this.ws.on('error', () => {});
    return this.waitFor((f) => f.op === 'hello');
  }

  notify() { for (const l of [...this.listeners]) l(); }

  /// Resolves with the first recorded frame matching `pred`, waiting up to `ms`.
  waitFor(pred, ms = 5000, from = 0) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const f = this.frames.slice(from).find(pred);
        if (f) { this.listeners.delete(check); clearTimeout(t); resolve(f); return true; }
        return false;
      };
      const t = setTimeout(() => {
        this.listeners.delete(check);
        reject(new Error(`timed out; frames: ${JSON.stringify(this.frames).slice(-2000)} closed: ${JSON.stringify(this.closed)}`));
      }, ms);
      if (!check()) this.listeners.add(check);
    });
  }

  waitClosed(ms = 5000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.closed) { this.listeners.delete(check); clearTimeout(t); resolve(this.closed); return true; }
        return false;
      };
      const t = setTimeout(() => { this.listeners.delete(check); reject(new Error('not closed')); }, ms);
      if (!check()) this.listeners.add(check);
    });
  }

  send(obj) { this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)); }

  async identify(user, device = 'phone', extra = {}) {
    await this.open();
    const ref = `id-${Math.random()}`;
    this.send({ op: 'identify', ref, token: user.token, device, ...extra });
    return this.waitFor((f) => f.ref === ref && (f.op === 'ready' || f.op === 'error'));
  }

  deliveries() { return this.frames.filter((f) => f.op === 'deliver'); }

  close() { try { this.ws.close(); } catch (e) {} }
}

async function connect(port, user, device = 'phone', extra = {}) {
  const c = new Client(port);
  const ready = await c.identify(user, device, extra);
  if (ready.op !== 'ready') throw new Error(`identify failed: ${JSON.stringify(ready)}`);
  return c;
}

module.exports = { startNode, Client, connect };
