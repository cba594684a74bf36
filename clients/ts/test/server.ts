// Runs a real Chorus server for the tests: builds the binary with cargo (once per test
// process), starts `chorus serve --dev` on a free port and a temporary data dir, and
// can stop and restart it on the same port and data.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, closeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ADMIN_TOKEN = 'test-admin';

/** The Cargo workspace root: the nearest ancestor of this file with a `[workspace]` Cargo.toml. */
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

/** `CHORUS_BIN` when set (a prebuilt binary), else `cargo build -p chorus` and its output. */
let built: string | undefined;

export function chorusBinary(): string {
  const given = process.env['CHORUS_BIN'];
  if (given) return resolve(given);
  if (built) return built;
  const root = repoRoot();
  const build = spawnSync('cargo', ['build', '-p', 'chorus'], { cwd: root, stdio: 'inherit' });
  if (build.status !== 0) throw new Error(`cargo build -p chorus failed (${build.status})`);
  const target = process.env['CARGO_TARGET_DIR'] ?? join(root, 'target');
  return (built = join(resolve(root, target), 'debug', 'chorus'));
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

export class TestServer {
  readonly dataDir = mkdtempSync(join(tmpdir(), 'chorus-ts-'));
  private child: ChildProcess | undefined;
  private constructor(
    readonly bin: string,
    readonly port: number,
    readonly extraArgs: string[],
  ) {}

  /** Starts a server; `extraArgs` go to `chorus serve` (e.g. `--heartbeat-ms 1000`). */
  static async start(extraArgs: string[] = []): Promise<TestServer> {
    const server = new TestServer(chorusBinary(), await freePort(), extraArgs);
    await server.start();
    return server;
  }

  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the binary and waits until `/healthz` answers. */
  async start(): Promise<void> {
    const log = openSync(join(this.dataDir, 'server.log'), 'a');
    const args = ['serve', '--listen', `127.0.0.1:${this.port}`, '--data-dir', this.dataDir, '--admin-token', ADMIN_TOKEN, '--dev', ...this.extraArgs];
    // Short drain so a restart in the tests stays quick.
    const env = { ...process.env, CHORUS_SHUTDOWN_GRACE_MS: '2000', CHORUS_LOG: 'warn' };
    this.child = spawn(this.bin, args, { stdio: ['ignore', log, log], env });
    closeSync(log);
    const exited = new Promise<never>((_, fail) =>
      this.child?.once('exit', (code) => fail(new Error(`chorus exited early (${code}); see ${this.log()}`))),
    );
    const deadline = Date.now() + 30_000;
    const healthy = (async () => {
      while (Date.now() < deadline) {
        try {
          if ((await fetch(`${this.baseUrl}/healthz`)).ok) return;
        } catch {
          // not listening yet
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`chorus did not become healthy; see ${this.log()}`);
    })();
    await Promise.race([healthy, exited]);
    this.child.removeAllListeners('exit');
  }

  /** Sends a signal that does not end the process (SIGSTOP freezes it, SIGCONT thaws it). */
  signal(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }

  /** Sends `signal` (SIGTERM: graceful, sockets closed with 3001) and waits for the exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return child?.exitCode ?? null;
    const exited = new Promise<number | null>((ok) => child.once('exit', (code) => ok(code)));
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }

  async dispose(): Promise<void> {
    await this.stop();
    if (!process.env['KEEP_CHORUS_DATA']) rmSync(this.dataDir, { recursive: true, force: true });
  }

  log(): string {
    return join(this.dataDir, 'server.log');
  }
}
