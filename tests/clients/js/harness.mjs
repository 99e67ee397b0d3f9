// Runs the built retention-proxy binary against the Python suite's fake vendor (vendor.py
// drives ../fake_vendor.py, which recomputes every SigV4 signature it receives) for the
// JavaScript clients, as ../harness.py and ../conftest.py do for the Python ones.
//
// withWorld() gives one test its own vendor, proxy and temporary directory, and after a test
// that passed asserts what conftest.py asserts: the proxy exits 0 on SIGTERM, `audit verify`
// accepts the chain, the store holds no key, token or signature seen in the test, and the
// vendor saw no bad signature, misrouted call or unknown route.

import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..', '..');

export const EVENT_WAIT_MS = 10_000;
const READY_WAIT_MS = 20_000;
const FINAL_OUTCOMES = new Set(['forwarded', 'denied', 'rejected', 'upstream_error']);
const PROXY_ENV_VARS = new Set(['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'NO_PROXY']);

// No proxy variables or AWS profile of the machine may leak into the clients.
for (const k of Object.keys(process.env)) {
  if (PROXY_ENV_VARS.has(k.toUpperCase()) || k.toUpperCase().startsWith('AWS_')) delete process.env[k];
}
process.env.AWS_CONFIG_FILE = '/dev/null';
process.env.AWS_SHARED_CREDENTIALS_FILE = '/dev/null';
process.env.AWS_EC2_METADATA_DISABLED = 'true';

export function proxyBinary() {
  const p = process.env.RETENTION_PROXY_BIN || 'target/release/retention-proxy';
  const abs = path.isAbsolute(p) ? p : path.join(REPO_ROOT, p);
  assert.ok(existsSync(abs), `retention-proxy binary not found at ${abs}: build it with ` +
    '`cargo build --release` or point RETENTION_PROXY_BIN at it');
  return abs;
}

// The Python that has the client suite's packages (scripts/test-all.sh passes its venv's).
function pythonBinary() {
  return process.env.CLIENTS_PYTHON || 'python3';
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const tomlStr = (s) => JSON.stringify(s); // a JSON string is a valid TOML basic string

export function signatureOf(authorization) {
  const m = /Signature=([0-9a-f]{64})/.exec(authorization || '');
  return m ? m[1] : null;
}

export function header(headers, name) {
  // headers: [[name, value], ...] (vendor records) or a plain object (client requests)
  const entries = Array.isArray(headers) ? headers : Object.entries(headers);
  const hit = entries.find(([k]) => k.toLowerCase() === name.toLowerCase());
  return hit ? hit[1] : undefined;
}

// --------------------------------------------------------------------------- the vendor

export class Vendor {
  static async start() {
    const v = new Vendor();
    v.proc = spawn(pythonBinary(), [path.join(HERE, 'vendor.py')], {
      cwd: HERE, stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
    });
    v.stderr = '';
    v.proc.stderr.on('data', (d) => { v.stderr += d; });
    v.lines = createInterface({ input: v.proc.stdout });
    v.waiting = [];
    v.queued = [];
    v.lines.on('line', (line) => {
      const w = v.waiting.shift();
      if (w) w(line); else v.queued.push(line);
    });
    v.exited = new Promise((resolve) => v.proc.on('exit', (code) => resolve(code)));
    const first = await Promise.race([
      v.nextLine(),
      v.exited.then((code) => { throw new Error(`vendor.py exited ${code}: ${v.stderr}`); }),
    ]);
    const hello = JSON.parse(first);
    v.urls = hello.urls;
    v.constants = hello.constants;
    return v;
  }

  nextLine() {
    if (this.queued.length) return Promise.resolve(this.queued.shift());
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  async call(cmd) {
    this.proc.stdin.write(JSON.stringify(cmd) + '\n');
    const out = JSON.parse(await this.nextLine());
    assert.equal(out.error, undefined, `vendor.py: ${out.error}`);
    return out;
  }

  async mark() { return (await this.call({ cmd: 'mark' })).mark; }
  async since(mark) { return (await this.call({ cmd: 'since', mark })).records; }
  async problems() { return (await this.call({ cmd: 'problems' })).problems; }

  async stop() {
    this.proc.stdin.end();
    const code = await this.exited;
    assert.equal(code, 0, `vendor.py exited ${code}: ${this.stderr}`);
  }
}

// --------------------------------------------------------------------------- the proxy

function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.toUpperCase().startsWith('AWS_') && !PROXY_ENV_VARS.has(k.toUpperCase())) env[k] = v;
  }
  return {
    ...env, AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
    AWS_EC2_METADATA_DISABLED: 'true', ...extra,
  };
}

function run(file, args, opts) {
  return new Promise((resolve) => {
    execFile(file, args, { maxBuffer: 64 << 20, timeout: 30_000, ...opts },
      (err, stdout, stderr) => resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr }));
  });
}

export class Proxy {
  constructor(binary, workdir, vendor, { serverConfig = '', extraConfig = '' } = {}) {
    this.binary = binary;
    this.workdir = workdir;
    this.vendor = vendor;
    this.serverConfig = serverConfig; // lines added to [server], e.g. admin_token
    this.extraConfig = extraConfig; // tables appended, e.g. [[guardrails]]
    this.db = path.join(workdir, 'audit.db');
    this.configPath = path.join(workdir, 'retention-proxy.toml');
    this.logPath = path.join(workdir, 'proxy.log');
  }

  get url() { return `http://127.0.0.1:${this.port}`; }
  get adminUrl() { return `http://127.0.0.1:${this.adminPort}`; }

  configText() {
    const c = this.vendor.constants;
    const lines = [
      '[server]',
      `listen = ${tomlStr(`127.0.0.1:${this.port}`)}`,
      `admin_listen = ${tomlStr(`127.0.0.1:${this.adminPort}`)}`,
      this.serverConfig,
      '',
      '[audit]',
      `path = ${tomlStr(this.db)}`,
      '',
      '[upstreams]',
      ...Object.entries(this.vendor.urls).map(([family, url]) => `${family} = ${tomlStr(url)}`),
      '',
      '[forward]',
      `allow_hosts = [${Object.values(c.REAL_HOSTS).map(tomlStr).join(', ')}]`,
      '',
      '[forward.resolve]',
      ...Object.entries(c.REAL_HOSTS).map(([family, host]) =>
        `${tomlStr(host)} = ${tomlStr(this.vendor.urls[family])}`),
    ];
    return lines.join('\n') + '\n' + this.extraConfig;
  }

  async start() {
    this.port = await freePort();
    do { this.adminPort = await freePort(); } while (this.adminPort === this.port);
    await writeFile(this.configPath, this.configText());
    const c = this.vendor.constants;
    this.log = '';
    this.proc = spawn(this.binary, ['serve', '--config', this.configPath], {
      cwd: this.workdir, stdio: ['ignore', 'pipe', 'pipe'],
      env: cleanEnv({
        AWS_ACCESS_KEY_ID: c.PROXY_AK, AWS_SECRET_ACCESS_KEY: c.PROXY_SK,
        AWS_REGION: 'us-east-1', AWS_DEFAULT_REGION: 'us-east-1',
      }),
    });
    const keep = (d) => { this.log = (this.log + d).slice(-6000); };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    this.exitCode = null;
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => {
      this.exitCode = code ?? signal;
      resolve(this.exitCode);
    }));
    const deadline = Date.now() + READY_WAIT_MS;
    let last = '';
    while (Date.now() < deadline) {
      if (this.exitCode !== null) {
        throw new Error(`retention-proxy exited ${this.exitCode} during start-up\n` +
          `config:\n${this.configText()}\n${this.log}`);
      }
      try {
        const r = await fetch(this.adminUrl + '/healthz', { signal: AbortSignal.timeout(1000) });
        if (r.status === 200) return this;
        last = `status ${r.status}`;
      } catch (e) {
        last = String(e);
      }
      await sleep(50);
    }
    this.proc.kill('SIGKILL');
    throw new Error(`/healthz not 200 within ${READY_WAIT_MS} ms (${last})\n${this.log}`);
  }

  async stop() {
    if (this.exitCode === null) this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 15_000);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }

  cli(...args) {
    return run(this.binary, args, { cwd: this.workdir, env: cleanEnv() });
  }

  // Every event, oldest first, as `audit query --format json` prints them.
  async query(...filters) {
    const order = filters.includes('--order') ? [] : ['--order', 'oldest'];
    const r = await this.cli('audit', 'query', '--db', this.db, '--format', 'json',
      '--limit', '10000', ...order, ...filters);
    assert.equal(r.code, 0, `audit query exited ${r.code}: ${r.stderr}`);
    const events = JSON.parse(r.stdout);
    assert.ok(Array.isArray(events), `audit query --format json: not an array: ${r.stdout.slice(0, 300)}`);
    return events;
  }

  // Poll `audit query` until exactly one event matches and has a final outcome.
  async waitEvent(pred, what) {
    const deadline = Date.now() + EVENT_WAIT_MS;
    for (;;) {
      const events = await this.query();
      const hits = events.filter(pred);
      assert.ok(hits.length <= 1, `${hits.length} events match ${what} (want one): ` +
        JSON.stringify(hits).slice(0, 3000));
      if (hits.length === 1 && FINAL_OUTCOMES.has(hits[0].outcome)) return hits[0];
      if (Date.now() > deadline) {
        assert.fail(`no event with a final outcome for ${what} within ${EVENT_WAIT_MS} ms; ` +
          `all events: ${JSON.stringify(events).slice(0, 4000)}`);
      }
      await sleep(50);
    }
  }

  verify() {
    return this.cli('audit', 'verify', '--db', this.db);
  }

  // The bytes of the database and its SQLite side files.
  storeBytes() {
    return ['', '-wal', '-shm', '-journal']
      .map((s) => this.db + s).filter((p) => existsSync(p)).map((p) => [p, readFileSync(p)]);
  }
}

// --------------------------------------------------------------------------- one test's world

export class World {
  constructor() {
    this.secrets = []; // tokens or keys a test used beyond the shared constants
    this.sentAuthorizations = []; // every Authorization a client sent (see captureRequests)
  }

  get c() { return this.vendor.constants; }

  async secretsOfTest() {
    const c = this.c;
    const out = [c.CLIENT_SK, c.PROXY_SK, c.SLACK_TOKEN, c.SLACK_FORM_TOKEN, ...this.secrets];
    out.push(...this.sentAuthorizations.map(signatureOf));
    for (const rec of await this.vendor.since(0)) out.push(signatureOf(header(rec.headers, 'authorization')));
    return out.filter(Boolean);
  }

  async assertNotInStore() {
    const secrets = await this.secretsOfTest();
    const found = [];
    for (const [p, bytes] of this.proxy.storeBytes()) {
      for (const s of secrets) if (bytes.includes(Buffer.from(s))) found.push(`${s.slice(0, 12)}... in ${path.basename(p)}`);
    }
    assert.deepEqual(found, [], 'secrets stored at rest');
  }

  // After a test that passed: what conftest.py checks after every Python test.
  async finish() {
    await this.assertNotInStore();
    const code = await this.proxy.stop();
    assert.equal(code, 0, `retention-proxy exited ${code} after SIGTERM (want 0)\n${this.proxy.log}`);
    await this.assertNotInStore();
    if (existsSync(this.proxy.db)) {
      const r = await this.proxy.verify();
      assert.equal(r.code, 0, `audit verify exited ${r.code}: ${r.stdout}${r.stderr}`);
    }
    assert.deepEqual(await this.vendor.problems(), [], 'the fake vendor saw bad signatures or misrouted calls');
  }
}

// Run `body(world)` with a fresh fake vendor and proxy (options: serverConfig, extraConfig).
export async function withWorld(options, body) {
  const w = new World();
  w.dir = await mkdtemp(path.join(tmpdir(), 'rp-js-'));
  let ok = false;
  try {
    w.vendor = await Vendor.start();
    w.proxy = await new Proxy(proxyBinary(), w.dir, w.vendor, options).start();
    await body(w);
    ok = true;
    await w.finish();
  } catch (e) {
    if (w.proxy?.log) e.message += `\n--- proxy log (tail) ---\n${w.proxy.log}`;
    throw e;
  } finally {
    if (w.proxy?.proc && w.proxy.exitCode === null) {
      w.proxy.proc.kill('SIGKILL');
      await w.proxy.exited;
    }
    if (w.vendor) await w.vendor.stop().catch((e) => { if (ok) throw e; });
    await rm(w.dir, { recursive: true, force: true });
  }
}

// --------------------------------------------------------------------------- AWS SDK helpers

// Records what an AWS SDK v3 client puts on the wire: the deserialize step runs after
// retries and signing, just before the request handler sends it.
export function captureRequests(client, world) {
  const sent = [];
  client.middlewareStack.add((next) => async (args) => {
    const r = args.request;
    const headers = { ...r.headers };
    let body = r.body ?? '';
    if (body instanceof Uint8Array) body = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
    assert.equal(typeof body, 'string', 'a streamed request body cannot be compared');
    sent.push({ method: r.method, path: r.path, query: r.query, headers, body });
    if (headers.authorization) world.sentAuthorizations.push(headers.authorization);
    return next(args);
  }, { step: 'deserialize', name: 'retentionProxyTestCapture', priority: 'low' });
  return sent;
}
