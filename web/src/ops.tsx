// The operations page: live charts of the realtime engine, polled from
// `GET /api/v1/realtime/stats` (the JSON twin of `/metrics`) once a second. The stats
// need the admin token or a server key with `stats:read`: on 401/403 the page asks for
// one and keeps it for the tab (sessionStorage), apart from the chat's sign-in.
import { useEffect, useState } from 'preact/hooks';

interface Snapshot {
  connections_current: number;
  connections_total: number;
  events_published: number;
  events_delivered: number;
  events_dropped: number;
  events_skipped: number;
  slow_consumer_evictions: number;
  heartbeat_timeouts: number;
  resumes_recovered: number;
  resumes_unrecovered: number;
  replayed_events: number;
  inbound_frames: number;
  inbound_errors: number;
  rate_limited: number;
  events_by_type: Record<string, number>;
}

interface Stats {
  metrics: Snapshot;
  subscriptions: Record<string, number>;
  http_rate_limited: number;
}

/** One sample: gauges as read, counters as rates over the interval before it. */
interface Point {
  at: number;
  connections: number;
  published: number;
  delivered: number;
  dropped: number;
  evictions: number;
  timeouts: number;
  resumed: number;
  unrecovered: number;
}

const EVERY_MS = 1_000;
const OPS_TOKEN_KEY = 'chorus.opsToken';
const WINDOW = 120;
const MIN_SPAN = 30;

export function OpsPage() {
  const [points, setPoints] = useState<Point[]>([]);
  const [latest, setLatest] = useState<Stats | undefined>();
  const [error, setError] = useState<string | undefined>();
  const [token, setToken] = useState(() => sessionStorage.getItem(OPS_TOKEN_KEY) ?? '');
  const [refused, setRefused] = useState<string | undefined>();

  useEffect(() => {
    let prev: { at: number; m: Snapshot } | undefined;
    let stopped = false;
    const tick = async () => {
      try {
        const headers: Record<string, string> = token ? { Authorization: `Bearer ${token}` } : {};
        const res = await fetch('/api/v1/realtime/stats', { cache: 'no-store', headers });
        if (res.status === 401 || res.status === 403) {
          if (!stopped) {
            setRefused(token ? `That token was refused (HTTP ${res.status}).` : 'The statistics need a token.');
            setError(undefined);
          }
          return;
        }
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const stats = (await res.json()) as Stats;
        if (stopped) return;
        const now = Date.now();
        const m = stats.metrics;
        if (prev) {
          const secs = Math.max(0.001, (now - prev.at) / 1000);
          // A restarted server starts its counters again from 0: no negative rates.
          const rate = (k: keyof Snapshot) => Math.max(0, ((m[k] as number) - (prev!.m[k] as number)) / secs);
          const point: Point = {
            at: now,
            connections: m.connections_current,
            published: rate('events_published'),
            delivered: rate('events_delivered'),
            dropped: rate('events_dropped'),
            evictions: rate('slow_consumer_evictions'),
            timeouts: rate('heartbeat_timeouts'),
            resumed: rate('resumes_recovered'),
            unrecovered: rate('resumes_unrecovered'),
          };
          setPoints((ps) => [...ps.slice(-(WINDOW - 1)), point]);
        }
        prev = { at: now, m };
        setLatest(stats);
        setError(undefined);
        setRefused(undefined);
      } catch (err) {
        if (!stopped) setError(`Cannot reach the server (${String(err)}); retrying.`);
      }
    };
    void tick();
    const timer = setInterval(() => void tick(), EVERY_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [token]);

  useEffect(() => {
    document.title = 'Operations · Chorus';
  }, []);

  const m = latest?.metrics;
  return (
    <div class="ops">
      <header class="topbar">
        <span class="brand">Chorus</span>
        <span class="workspace">Operations</span>
        <span class="spacer" />
        <span class={`conn conn-${error ? 'reconnecting' : 'open'}`} role="status" aria-live="polite">
          <span class="conn-light" aria-hidden="true" />
          {error ? 'Server unreachable' : refused ? 'Token needed' : latest ? 'Live' : 'Loading…'}
        </span>
        <a class="toplink" href="/">
          Chat
        </a>
      </header>
      <main class="ops-main" aria-labelledby="ops-title">
        <h1 id="ops-title">Realtime engine</h1>
        <p class="muted">
          Sampled every second from <code>/api/v1/realtime/stats</code>; the last {WINDOW} seconds. Prometheus scrapes the
          same counters at <a href="/metrics">/metrics</a>.
        </p>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        {refused && (
          <form
            class="ops-token"
            onSubmit={(e) => {
              e.preventDefault();
              const value = String(new FormData(e.currentTarget).get('token') ?? '').trim();
              sessionStorage.setItem(OPS_TOKEN_KEY, value);
              setToken(value);
            }}
          >
            <p role="alert">{refused}</p>
            <label>
              Admin token or server key (<code>stats:read</code>){' '}
              <input name="token" type="password" autoComplete="off" required />
            </label>{' '}
            <button type="submit">Show</button>
          </form>
        )}
        <section class="figures" aria-label="Totals">
          <Figure label="Connections now" value={m?.connections_current} />
          <Figure label="Connections accepted" value={m?.connections_total} />
          <Figure label="Events published" value={m?.events_published} />
          <Figure label="Events delivered" value={m?.events_delivered} />
          <Figure label="Events dropped" value={m?.events_dropped} warn />
          <Figure label="Slow-consumer evictions" value={m?.slow_consumer_evictions} warn />
          <Figure label="Heartbeat timeouts" value={m?.heartbeat_timeouts} warn />
          <Figure label="Resumes recovered" value={m?.resumes_recovered} />
          <Figure label="Resumes not recovered" value={m?.resumes_unrecovered} warn />
        </section>
        <section class="charts" aria-label="Charts" data-samples={points.length}>
          <Chart title="Connections" unit="" points={points} series={[{ key: 'connections', label: 'open', color: 'var(--accent)' }]} />
          <Chart
            title="Events per second"
            unit="/s"
            points={points}
            series={[
              { key: 'published', label: 'published', color: 'var(--accent)' },
              { key: 'delivered', label: 'delivered', color: 'var(--ok)' },
            ]}
          />
          <Chart
            title="Drops and evictions per second"
            unit="/s"
            points={points}
            series={[
              { key: 'dropped', label: 'dropped', color: 'var(--bad)' },
              { key: 'evictions', label: 'slow-consumer evictions', color: 'var(--warn)' },
              { key: 'timeouts', label: 'heartbeat timeouts', color: 'var(--muted)' },
            ]}
          />
          <Chart
            title="Resumes per second"
            unit="/s"
            points={points}
            series={[
              { key: 'resumed', label: 'recovered', color: 'var(--ok)' },
              { key: 'unrecovered', label: 'not recovered', color: 'var(--warn)' },
            ]}
          />
        </section>
        {latest && (
          <section class="tables">
            <Table title="Subscriptions by scope kind" rows={latest.subscriptions} />
            <Table title="Events published by type" rows={latest.metrics.events_by_type} />
          </section>
        )}
      </main>
    </div>
  );
}

function Figure({ label, value, warn }: { label: string; value: number | undefined; warn?: boolean }) {
  return (
    <div class={`figure${warn && value ? ' warn' : ''}`}>
      <span class="figure-value">{value === undefined ? '–' : value.toLocaleString()}</span>
      <span class="figure-label">{label}</span>
    </div>
  );
}

interface Series {
  key: Exclude<keyof Point, 'at'>;
  label: string;
  color: string;
}

const W = 600;
const H = 160;
const PAD = 4;

function Chart({ title, unit, points, series }: { title: string; unit: string; points: Point[]; series: Series[] }) {
  const max = Math.max(1, ...points.flatMap((p) => series.map((s) => p[s.key])));
  const top = niceCeil(max);
  // The time axis fills up from 30 s to the whole window, newest sample at the right.
  const span = Math.min(WINDOW, Math.max(MIN_SPAN, points.length));
  const x = (i: number) => PAD + ((W - 2 * PAD) * (i + span - points.length)) / (span - 1);
  const y = (v: number) => H - PAD - ((H - 2 * PAD) * v) / top;
  const last = points.at(-1);
  const show = (v: number) => (unit ? fmt(v) : Math.round(v).toLocaleString());
  const summary = series.map((s) => `${s.label} ${show(last?.[s.key] ?? 0)}${unit}`).join(', ');
  return (
    <figure class="chart">
      <figcaption>
        <span class="chart-title">{title}</span>
        <span class="legend">
          {series.map((s) => (
            <span key={s.key} class="legend-item">
              <span class="swatch" style={{ background: s.color }} aria-hidden="true" />
              {s.label} <strong>{show(last?.[s.key] ?? 0)}</strong>
              {unit}
            </span>
          ))}
        </span>
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${title}: ${summary}`} preserveAspectRatio="none">
        {[0.25, 0.5, 0.75].map((f) => (
          <line key={f} x1={0} x2={W} y1={y(top * f)} y2={y(top * f)} class="grid" />
        ))}
        {series.map((s) =>
          points.length > 1 ? (
            <polygon
              key={`${s.key}-area`}
              fill={s.color}
              fill-opacity={0.12}
              stroke="none"
              points={`${x(0).toFixed(1)},${y(0)} ${points.map((p, i) => `${x(i).toFixed(1)},${y(p[s.key]).toFixed(1)}`).join(' ')} ${x(points.length - 1).toFixed(1)},${y(0)}`}
            />
          ) : null,
        )}
        {series.map((s) =>
          points.length > 1 ? (
            <polyline
              key={s.key}
              fill="none"
              stroke={s.color}
              stroke-width={2}
              vector-effect="non-scaling-stroke"
              points={points.map((p, i) => `${x(i).toFixed(1)},${y(p[s.key]).toFixed(1)}`).join(' ')}
            />
          ) : null,
        )}
      </svg>
      <div class="axis" aria-hidden="true">
        <span>
          max {show(top)}
          {unit}
        </span>
        <span>last {span} s</span>
      </div>
    </figure>
  );
}

function Table({ title, rows }: { title: string; rows: Record<string, number> }) {
  const entries = Object.entries(rows).sort((a, b) => b[1] - a[1]);
  return (
    <table>
      <caption>{title}</caption>
      <thead>
        <tr>
          <th scope="col">name</th>
          <th scope="col">count</th>
        </tr>
      </thead>
      <tbody>
        {entries.length === 0 && (
          <tr>
            <td colSpan={2} class="muted">
              none yet
            </td>
          </tr>
        )}
        {entries.map(([k, v]) => (
          <tr key={k}>
            <td>{k}</td>
            <td class="num">{v.toLocaleString()}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function niceCeil(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v: number): string {
  return v >= 100 ? Math.round(v).toLocaleString() : v >= 10 ? v.toFixed(1) : v.toFixed(v === 0 ? 0 : 2);
}
