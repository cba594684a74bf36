// A real Chorus server for the browser tests: `chorus serve --dev` on a free 127.0.0.1
// port with a temporary data dir, restartable on the same port and data.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The Cargo workspace root: the nearest ancestor with a `[workspace]` Cargo.toml. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'Cargo.toml');
    if (existsSync(manifest) && readFileSync(manifest, 'utf8').includes('[workspace]')) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('no Cargo workspace above the test files');
    dir = up;
  }
}

/** `CHORUS_BIN` when set, else `cargo build -p chorus` (which embeds web/dist). */
export function chorusBinary(): string {
  const given = process.env['CHORUS_BIN'];
  if (given) return resolve(given);
  const root = repoRoot();
  const build = spawnSync('cargo', ['build', '-p', 'chorus'], { cwd: root, stdio: 'inherit' });
  if (build.status !== 0) throw new Error(`cargo build -p chorus failed (${build.status})`);
  return join(resolve(root, process.env['CARGO_TARGET_DIR'] ?? 'target'), 'debug', 'chorus');
}

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() => (typeof address === 'object' && address ? ok(address.port) : fail(new Error('no port'))));
    });
  });
}

export class ChorusServer {
  readonly dataDir = mkdtempSync(join(tmpdir(), 'chorus-e2e-'));
  private child: ChildProcess | undefined;
  private constructor(
    readonly bin: string,
    readonly port: number,
  ) {}

  static async start(): Promise<ChorusServer> {
    const server = new ChorusServer(chorusBinary(), await freePort());
    await server.start();
    return server;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get log(): string {
    return join(this.dataDir, 'server.log');
  }

  /** Starts the binary and waits until `/healthz` answers. */
  async start(): Promise<void> {
    const log = openSync(this.log, 'a');
    const args = ['serve', '--listen', `127.0.0.1:${this.port}`, '--data-dir', this.dataDir, '--dev'];
    const env = { ...process.env, CHORUS_SHUTDOWN_GRACE_MS: '2000', CHORUS_LOG: 'warn' };
    const child = spawn(this.bin, args, { stdio: ['ignore', log, log], env });
    this.child = child;
    closeSync(log);
    let exited: ((code: number | null) => void) | undefined;
    const early = new Promise<never>((_, fail) => {
      exited = (code) => fail(new Error(`chorus exited early (${code}); see ${this.log}`));
      child.once('exit', exited);
    });
    const healthy = (async () => {
      for (const deadline = Date.now() + 30_000; Date.now() < deadline; ) {
        try {
          if ((await fetch(`${this.url}/healthz`)).ok) return;
        } catch {
          // not listening yet
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`chorus did not become healthy; see ${this.log}`);
    })();
    try {
      await Promise.race([healthy, early]);
    } finally {
      if (exited) child.off('exit', exited);
    }
  }

  /** SIGTERM (sockets closed with 3001 "reconnect") and wait for the exit. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }

  async dispose(): Promise<void> {
    await this.stop();
    if (!process.env['KEEP_CHORUS_DATA']) rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** A JSON request to the API, as the holder of `token`. */
  async api<T>(method: string, path: string, token?: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    if (token) headers['Authorization'] = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers,
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  }
}
