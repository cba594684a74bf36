// The chat's dialogs: new DM (one person or a group), new workspace, new channel,
// inviting people (existing accounts, or new ones with a one-time sign-in link and a
// token to hand over), the workspace's members and roles, a channel's details and
// members, pins, the Ctrl/Cmd+K switcher, my status, and deleting a message.
import { useEffect, useState } from 'preact/hooks';
import type { ChannelView, Message, Policy, Role, UserId } from '@chorus/client';
import { textContext } from './conversation';
import { signInUrl } from './links';
import type { Candidate, NewAccount } from './store';
import { Text } from './text';
import { AgentTag, Dialog, Dot, useUi, type DialogState } from './ui';

export function Dialogs({ dialog }: { dialog: DialogState }) {
  switch (dialog.kind) {
    case 'dm':
      return <DmPicker />;
    case 'workspace':
      return <NewWorkspace />;
    case 'channel':
      return <NewChannel />;
    case 'invite':
      return <Invite />;
    case 'members':
      return <Members />;
    case 'channel-details':
      return <ChannelDetails channelId={dialog.channelId} />;
    case 'pins':
      return <Pins channelId={dialog.channelId} />;
    case 'switcher':
      return <Switcher />;
    case 'status':
      return <Status />;
    case 'delete':
      return <ConfirmDelete message={dialog.message} />;
  }
}

function Problem({ text }: { text: string | undefined }) {
  return text ? (
    <p class="error" role="alert">
      {text}
    </p>
  ) : null;
}

// ------------------------------------------------------------------ DMs

function DmPicker() {
  const { store, close } = useUi();
  const [filter, setFilter] = useState('');
  const [chosen, setChosen] = useState<UserId[]>([]);
  useEffect(() => void store.loadMembers().catch(() => {}), []);
  const people = [...store.members.values()]
    .filter((m) => m.user.id !== store.me.id)
    .filter((m) => `${m.user.name} ${m.user.display_name}`.toLowerCase().includes(filter.toLowerCase()))
    .sort((a, b) => a.user.name.localeCompare(b.user.name));
  const start = (ids: UserId[]) => {
    if (!ids.length) return;
    close();
    void store.openDm(ids);
  };
  return (
    <Dialog id="dm" title="New direct message" onClose={close}>
      <p class="muted hint">Pick one person, or several for a group.</p>
      <label for="dm-filter" class="sr-only">
        Find a person
      </label>
      <input
        id="dm-filter"
        data-autofocus
        placeholder="Find a person"
        value={filter}
        onInput={(e) => setFilter(e.currentTarget.value)}
        onKeyDown={(e) => {
          if (e.key === 'Enter') {
            e.preventDefault();
            start(chosen.length ? chosen : people[0] ? [people[0].user.id] : []);
          }
        }}
      />
      <ul class="people" aria-label="People">
        {people.map((m) => {
          const on = chosen.includes(m.user.id);
          return (
            <li key={m.user.id}>
              <button
                class={`person${on ? ' chosen' : ''}`}
                role="checkbox"
                aria-checked={on}
                data-user={m.user.name}
                onClick={() => setChosen(on ? chosen.filter((id) => id !== m.user.id) : [...chosen, m.user.id])}
              >
                <span class="check" aria-hidden="true">
                  {on ? '✓' : ''}
                </span>
                <Dot online={store.online.get(m.user.id) ?? false} />
                <span>{m.user.display_name || m.user.name}</span>
                {m.user.display_name && m.user.display_name !== m.user.name && <span class="muted">@{m.user.name}</span>}
                {m.user.kind === 'agent' && <AgentTag />}
              </button>
            </li>
          );
        })}
        {people.length === 0 && <li class="muted">Nobody else here yet.</li>}
      </ul>
      <div class="dialog-actions">
        <button class="link" onClick={close}>
          Cancel
        </button>
        <button class="primary" disabled={!chosen.length} onClick={() => start(chosen)}>
          {chosen.length > 1 ? `Start a group of ${chosen.length + 1}` : 'Open'}
        </button>
      </div>
    </Dialog>
  );
}

// ------------------------------------------------------------------ workspaces and channels

function NewWorkspace() {
  const { store, close } = useUi();
  const [name, setName] = useState('');
  const [problem, setProblem] = useState<string>();
  return (
    <Dialog id="new-workspace" title="New workspace" onClose={close}>
      <form
        class="form"
        onSubmit={async (e) => {
          e.preventDefault();
          const refused = await store.createWorkspace(name.trim());
          if (refused) setProblem(refused);
          else close();
        }}
      >
        <label for="workspace-name">Name</label>
        <input id="workspace-name" required maxLength={80} value={name} onInput={(e) => setName(e.currentTarget.value)} />
        <p class="hint muted">You will be its owner, and can invite people once it exists.</p>
        <Problem text={problem} />
        <div class="dialog-actions">
          <button type="button" class="link" onClick={close}>
            Cancel
          </button>
          <button type="submit">Create workspace</button>
        </div>
      </form>
    </Dialog>
  );
}

const POLICIES: { value: Exclude<Policy, 'dm'>; label: string }[] = [
  { value: 'all', label: 'Everyone is notified (mentions narrow it down)' },
  { value: 'mentions', label: 'Only those mentioned are notified' },
  { value: 'broadcast', label: 'Announcements: nobody is woken' },
  { value: 'on_duty', label: 'The on-duty list and the mentioned' },
  { value: 'custom', label: 'A wake list chosen for the channel' },
  { value: 'round_robin', label: 'One agent at a time, in turn' },
];

function NewChannel() {
  const { store, close } = useUi();
  const [name, setName] = useState('');
  const [kind, setKind] = useState<'public' | 'private'>('public');
  const [policy, setPolicy] = useState<Exclude<Policy, 'dm'>>('all');
  const [topic, setTopic] = useState('');
  const [members, setMembers] = useState<UserId[]>([]);
  const [problem, setProblem] = useState<string>();
  const others = [...store.members.values()].filter((m) => m.user.id !== store.me.id).sort((a, b) => a.user.name.localeCompare(b.user.name));
  return (
    <Dialog id="new-channel" title="New channel" onClose={close} wide>
      <form
        class="form"
        onSubmit={async (e) => {
          e.preventDefault();
          const refused = await store.createChannel({ name: name.trim(), kind, policy, topic: topic.trim(), member_ids: members });
          if (refused) setProblem(refused);
          else close();
        }}
      >
        <label for="channel-name">Name</label>
        <input
          id="channel-name"
          required
          pattern="[a-z0-9_\-]{1,80}"
          title="1 to 80 of a–z, 0–9, _ and -"
          value={name}
          onInput={(e) => setName(e.currentTarget.value.toLowerCase().replace(/\s+/g, '-'))}
        />
        <fieldset>
          <legend>Who can find it</legend>
          <label class="choice">
            <input type="radio" name="kind" checked={kind === 'public'} onChange={() => setKind('public')} /> Public: anyone in
            the workspace can join
          </label>
          <label class="choice">
            <input type="radio" name="kind" checked={kind === 'private'} onChange={() => setKind('private')} /> Private: only
            the people added to it
          </label>
        </fieldset>
        <label for="channel-policy">Who is notified of a message</label>
        <select id="channel-policy" value={policy} onChange={(e) => setPolicy(e.currentTarget.value as Exclude<Policy, 'dm'>)}>
          {POLICIES.map((p) => (
            <option key={p.value} value={p.value}>
              {p.value} — {p.label}
            </option>
          ))}
        </select>
        <label for="channel-topic">Topic (optional)</label>
        <input id="channel-topic" maxLength={250} value={topic} onInput={(e) => setTopic(e.currentTarget.value)} />
        {others.length > 0 && (
          <fieldset>
            <legend>Add people now (optional)</legend>
            <div class="checks">
              {others.map((m) => (
                <label key={m.user.id} class="choice">
                  <input
                    type="checkbox"
                    checked={members.includes(m.user.id)}
                    onChange={(e) =>
                      setMembers(e.currentTarget.checked ? [...members, m.user.id] : members.filter((id) => id !== m.user.id))
                    }
                  />{' '}
                  {m.user.display_name || m.user.name}
                  {m.user.kind === 'agent' && <AgentTag />}
                </label>
              ))}
            </div>
          </fieldset>
        )}
        <Problem text={problem} />
        <div class="dialog-actions">
          <button type="button" class="link" onClick={close}>
            Cancel
          </button>
          <button type="submit">Create channel</button>
        </div>
      </form>
    </Dialog>
  );
}

// ------------------------------------------------------------------ people

const ROLES: Role[] = ['owner', 'admin', 'member', 'guest'];

function Invite() {
  const { store, close } = useUi();
  const [candidates, setCandidates] = useState<Candidate[] | undefined>();
  const [filter, setFilter] = useState('');
  const [role, setRole] = useState<Role>('member');
  const [problem, setProblem] = useState<string>();
  const [added, setAdded] = useState<string[]>([]);
  const [name, setName] = useState('');
  const [display, setDisplay] = useState('');
  const [kind, setKind] = useState<'human' | 'agent'>('human');
  const [created, setCreated] = useState<NewAccount | undefined>();
  const ws = store.workspaces.find((w) => w.id === store.workspaceId);

  useEffect(() => {
    store.candidates().then(setCandidates, (err: unknown) => {
      setCandidates([]);
      setProblem(String(err));
    });
  }, [added.length]);

  const shown = (candidates ?? []).filter((c) => `${c.name} ${c.display_name}`.toLowerCase().includes(filter.toLowerCase()));
  const link = created?.link ? signInUrl(location.origin, created.link.url_fragment) : '';
  const roles = store.role === 'owner' ? ROLES : ROLES.filter((r) => r !== 'owner');

  return (
    <Dialog id="invite" title={`Invite people to ${ws?.name ?? 'the workspace'}`} onClose={close} wide>
      <label for="invite-role">Their role</label>
      <select id="invite-role" value={role} onChange={(e) => setRole(e.currentTarget.value as Role)}>
        {roles.map((r) => (
          <option key={r} value={r}>
            {r}
          </option>
        ))}
      </select>
      <section aria-labelledby="invite-existing">
        <h3 id="invite-existing">Someone with an account</h3>
        <label for="invite-filter" class="sr-only">
          Find someone
        </label>
        <input id="invite-filter" data-autofocus placeholder="Find someone by name" value={filter} onInput={(e) => setFilter(e.currentTarget.value)} />
        <ul class="people" aria-label="People to invite">
          {candidates === undefined && <li class="muted">Loading…</li>}
          {shown.map((c) => (
            <li key={c.id} class="person-row">
              <span>
                {c.display_name || c.name} <span class="muted">@{c.name}</span> {c.kind === 'agent' && <AgentTag />}
              </span>
              <button
                class="small"
                aria-label={`Add ${c.name}`}
                onClick={async () => {
                  const refused = await store.addMember(c.id, role);
                  if (refused) setProblem(refused);
                  else setAdded([...added, c.name]);
                }}
              >
                Add
              </button>
            </li>
          ))}
          {candidates !== undefined && shown.length === 0 && (
            <li class="muted">
              {store.isServerAdmin
                ? 'Everyone with an account is here already.'
                : 'Nobody else from your workspaces. A server administrator can create accounts.'}
            </li>
          )}
        </ul>
        {added.length > 0 && (
          <p role="status" class="ok-text">
            Added: {added.join(', ')}.
          </p>
        )}
      </section>
      {store.isServerAdmin && (
        <section aria-labelledby="invite-new">
          <h3 id="invite-new">A new account</h3>
          {created ? (
            <div class="handover" role="status">
              {created.link ? (
                <>
                  <p>
                    <strong>{created.user.name}</strong> can sign in with this link once, until{' '}
                    {new Date(created.link.expires_at).toLocaleString()}. It is shown only now: hand it over privately. The
                    token below works too (under “Sign in with a token”), until revoked.
                  </p>
                  <label for="handover-link">Sign-in link</label>
                  <div class="copy-row">
                    <input id="handover-link" readOnly value={link} onFocus={(e) => e.currentTarget.select()} />
                    <button type="button" class="small" onClick={() => void navigator.clipboard?.writeText(link)}>
                      Copy link
                    </button>
                  </div>
                </>
              ) : (
                <p>
                  <strong>{created.user.name}</strong> signs in with this token (
                  {created.user.kind === 'agent' ? 'an agent uses it with the API or MCP' : 'under “Sign in with a token”'}). It is
                  shown only now: hand it over privately.
                </p>
              )}
              <label for="handover-token">Token</label>
              <div class="copy-row">
                <input id="handover-token" readOnly value={created.token} onFocus={(e) => e.currentTarget.select()} />
                <button type="button" class="small" onClick={() => void navigator.clipboard?.writeText(created.token)}>
                  Copy token
                </button>
              </div>
              <button
                type="button"
                class="link"
                onClick={() => {
                  setCreated(undefined);
                  setName('');
                  setDisplay('');
                }}
              >
                Create another
              </button>
            </div>
          ) : (
            <form
              class="form"
              onSubmit={async (e) => {
                e.preventDefault();
                setProblem(undefined);
                const out = await store.createAccount({ name: name.trim(), display_name: display.trim(), kind, role });
                if (typeof out === 'string') setProblem(out);
                else setCreated(out);
              }}
            >
              <label for="new-user-name">User name</label>
              <input
                id="new-user-name"
                required
                pattern="[a-z0-9_.\-]{1,32}"
                title="1 to 32 of a–z, 0–9, _ . -"
                value={name}
                onInput={(e) => setName(e.currentTarget.value.toLowerCase())}
              />
              <label for="new-user-display">Display name (optional)</label>
              <input id="new-user-display" maxLength={80} value={display} onInput={(e) => setDisplay(e.currentTarget.value)} />
              <label class="choice">
                <input type="checkbox" checked={kind === 'agent'} onChange={(e) => setKind(e.currentTarget.checked ? 'agent' : 'human')} />{' '}
                An AI agent
              </label>
              <div class="dialog-actions">
                <button type="submit">Create account</button>
              </div>
            </form>
          )}
        </section>
      )}
      <Problem text={problem} />
    </Dialog>
  );
}

function Members() {
  const { store, close, open } = useUi();
  const [problem, setProblem] = useState<string>();
  useEffect(() => void store.loadMembers().catch(() => {}), []);
  const people = [...store.members.values()].sort(
    (a, b) => Number(store.online.get(b.user.id) ?? false) - Number(store.online.get(a.user.id) ?? false) || a.user.name.localeCompare(b.user.name),
  );
  const ws = store.workspaces.find((w) => w.id === store.workspaceId);
  const mayTouch = (role: Role) => store.manages && (role !== 'owner' || store.role === 'owner');
  return (
    <Dialog id="members" title={`Members of ${ws?.name ?? 'the workspace'}`} onClose={close} wide>
      {store.manages && (
        <button class="primary" data-autofocus onClick={() => open({ kind: 'invite' })}>
          Invite people
        </button>
      )}
      <ul class="members" aria-label="Members">
        {people.map((m) => {
          const online = store.online.get(m.user.id) ?? false;
          const status = store.statuses.get(m.user.id);
          const me = m.user.id === store.me.id;
          return (
            <li key={m.user.id} class="member" data-user={m.user.name}>
              <Dot online={online} />
              <span class="member-name">
                {m.user.display_name || m.user.name}
                {m.user.display_name && m.user.display_name !== m.user.name && <span class="muted"> @{m.user.name}</span>}
                {me && <span class="muted"> (you)</span>}
              </span>
              {m.user.kind === 'agent' && <AgentTag />}
              {status && <span class="status-text muted">{status}</span>}
              <span class="spacer" />
              {mayTouch(m.role) && !me ? (
                <>
                  <label class="sr-only" for={`role-${m.user.id}`}>
                    Role of {m.user.name}
                  </label>
                  <select
                    id={`role-${m.user.id}`}
                    value={m.role}
                    onChange={async (e) => {
                      const refused = await store.setRole(m.user.id, e.currentTarget.value as Role);
                      setProblem(refused);
                    }}
                  >
                    {(store.role === 'owner' ? ROLES : ROLES.filter((r) => r !== 'owner')).map((r) => (
                      <option key={r} value={r}>
                        {r}
                      </option>
                    ))}
                  </select>
                  <button
                    class="small"
                    aria-label={`Remove ${m.user.name} from the workspace`}
                    onClick={async () => setProblem(await store.removeMember(m.user.id))}
                  >
                    Remove
                  </button>
                </>
              ) : (
                <span class="role">{m.role}</span>
              )}
            </li>
          );
        })}
      </ul>
      <Problem text={problem} />
      <div class="dialog-actions">
        <button
          class="danger"
          onClick={async () => {
            const refused = await store.removeMember(store.me.id);
            if (refused) setProblem(refused);
            else close();
          }}
        >
          Leave {ws?.name ?? 'the workspace'}
        </button>
      </div>
    </Dialog>
  );
}

function ChannelDetails({ channelId }: { channelId: number }) {
  const { store, close } = useUi();
  const known = store.channels.get(channelId);
  const [detail, setDetail] = useState<ChannelView | undefined>();
  const [name, setName] = useState(known?.name ?? '');
  const [topic, setTopic] = useState(known?.topic ?? '');
  const [policy, setPolicy] = useState<Policy>(known?.policy ?? 'all');
  const [adding, setAdding] = useState<string>('');
  const [problem, setProblem] = useState<string>();
  const [saved, setSaved] = useState(false);
  const reload = () => store.http.getChannel(channelId).then(setDetail, (err: unknown) => setProblem(String(err)));
  useEffect(() => void reload(), [channelId]);
  if (!known) return null;
  const memberIds = detail?.member_ids ?? [];
  const mayEdit = store.manages || known.created_by === store.me.id;
  const mayAdd = known.kind === 'public' ? known.member || store.manages : known.member && (store.manages || known.created_by === store.me.id);
  const addable = [...store.members.values()].filter((m) => !memberIds.includes(m.user.id));
  return (
    <Dialog id="channel-details" title={`#${known.name}`} onClose={close} wide>
      {mayEdit ? (
        <form
          class="form"
          onSubmit={async (e) => {
            e.preventDefault();
            const refused = await store.updateChannel(channelId, {
              ...(name !== known.name && { name }),
              ...(topic !== known.topic && { topic }),
              ...(policy !== known.policy && policy !== 'dm' && { policy }),
            });
            setProblem(refused);
            setSaved(!refused);
          }}
        >
          <label for="details-name">Name</label>
          <input id="details-name" required pattern="[a-z0-9_\-]{1,80}" value={name} onInput={(e) => setName(e.currentTarget.value)} />
          <label for="details-topic">Topic</label>
          <input id="details-topic" maxLength={250} value={topic} onInput={(e) => setTopic(e.currentTarget.value)} />
          <label for="details-policy">Who is notified of a message</label>
          <select id="details-policy" value={policy} onChange={(e) => setPolicy(e.currentTarget.value as Policy)}>
            {POLICIES.map((p) => (
              <option key={p.value} value={p.value}>
                {p.value} — {p.label}
              </option>
            ))}
          </select>
          <div class="dialog-actions">
            {saved && (
              <span role="status" class="ok-text">
                Saved.
              </span>
            )}
            <button type="submit">Save</button>
          </div>
        </form>
      ) : (
        <p>
          {known.topic || <span class="muted">No topic.</span>} <span class="tag">{known.kind}</span> <span class="tag">{known.policy}</span>
        </p>
      )}
      <h3>Members ({memberIds.length})</h3>
      <ul class="members" aria-label="Channel members">
        {memberIds.map((id) => (
          <li key={id} class="member">
            <Dot online={store.online.get(id) ?? false} />
            <span class="member-name">{store.userName(id)}</span>
            {store.isAgent(id) && <AgentTag />}
          </li>
        ))}
      </ul>
      {mayAdd && addable.length > 0 && (
        <form
          class="inline-form"
          onSubmit={async (e) => {
            e.preventDefault();
            if (!adding) return;
            const refused = await store.addToChannel(channelId, Number(adding));
            setProblem(refused);
            if (!refused) {
              setAdding('');
              void reload();
            }
          }}
        >
          <label for="add-to-channel">Add someone</label>
          <select id="add-to-channel" value={adding} onChange={(e) => setAdding(e.currentTarget.value)}>
            <option value="">Choose…</option>
            {addable.map((m) => (
              <option key={m.user.id} value={m.user.id}>
                {m.user.display_name || m.user.name}
              </option>
            ))}
          </select>
          <button type="submit" class="small" disabled={!adding}>
            Add
          </button>
        </form>
      )}
      <Problem text={problem} />
      {known.member && (
        <div class="dialog-actions">
          <button
            class="danger"
            onClick={() => {
              close();
              void store.leaveChannel(channelId);
            }}
          >
            Leave #{known.name}
          </button>
        </div>
      )}
    </Dialog>
  );
}

function Pins({ channelId }: { channelId: number }) {
  const { store, close } = useUi();
  useEffect(() => void store.loadPins(channelId), [channelId]);
  const pins = store.pins.get(channelId);
  const c = store.channels.get(channelId);
  return (
    <Dialog id="pins" title={`Pinned in ${c ? (c.kind === 'dm' ? store.channelLabel(c) : `#${c.name}`) : 'this conversation'}`} onClose={close} wide>
      {pins === undefined && <p class="muted">Loading…</p>}
      {pins?.length === 0 && <p class="muted">Nothing is pinned yet: pin a message with its 📌 button.</p>}
      <ul class="pins" aria-label="Pinned messages">
        {pins?.map((p) => (
          <li key={p.message.id} class="pin">
            <div class="msg-head">
              <span class="author">{store.userName(p.message.author_id)}</span>
              <time dateTime={p.message.created_at}>{new Date(p.message.created_at).toLocaleString()}</time>
            </div>
            <div class="msg-text">
              <Text text={p.message.text} ctx={textContext(store)} />
            </div>
            <p class="muted small-print">
              Pinned by {store.userName(p.pinned_by)}{' '}
              <button class="link" onClick={() => void store.togglePin({ ...p.message, pinned: true })}>
                Unpin
              </button>
            </p>
          </li>
        ))}
      </ul>
    </Dialog>
  );
}

// ------------------------------------------------------------------ switcher, status, delete

interface Destination {
  key: string;
  label: string;
  hint: string;
  go: () => void;
}

function Switcher() {
  const { store, close } = useUi();
  const [query, setQuery] = useState('');
  const [active, setActive] = useState(0);
  const q = query.trim().toLowerCase().replace(/^[#@]/, '');
  const channels = [...store.channels.values()].map<Destination>((c) => ({
    key: `c${c.id}`,
    label: c.kind === 'dm' ? store.channelLabel(c) : `#${c.name}`,
    hint: c.kind === 'dm' ? 'direct message' : c.member ? (c.unread ? `${c.unread} unread` : c.kind) : 'join',
    go: () => void store.selectChannel(c.id),
  }));
  const dmWith = new Set([...store.channels.values()].map((c) => store.dmPeer(c)).filter((id) => id !== undefined));
  const people = [...store.members.values()]
    .filter((m) => m.user.id !== store.me.id && !dmWith.has(m.user.id))
    .map<Destination>((m) => ({
      key: `u${m.user.id}`,
      label: m.user.display_name || m.user.name,
      hint: 'new direct message',
      go: () => void store.openDm([m.user.id]),
    }));
  const all = [...channels, ...people];
  const score = (d: Destination) => {
    const l = d.label.toLowerCase().replace(/^#/, '');
    return !q ? 1 : l.startsWith(q) ? 3 : l.includes(q) ? 2 : 0;
  };
  const found = all
    .map((d) => ({ d, s: score(d) }))
    .filter((x) => x.s > 0)
    .sort((a, b) => b.s - a.s || a.d.label.localeCompare(b.d.label))
    .slice(0, 12)
    .map((x) => x.d);
  const current = Math.min(active, Math.max(0, found.length - 1));
  const go = (d: Destination | undefined) => {
    if (!d) return;
    close();
    d.go();
  };
  return (
    <Dialog id="switcher" title="Go to a conversation" onClose={close}>
      <input
        data-autofocus
        role="combobox"
        aria-expanded="true"
        aria-controls="switcher-list"
        aria-activedescendant={found.length ? `switch-${found[current]!.key}` : undefined}
        aria-label="Channel or person"
        placeholder="Channel or person"
        value={query}
        onInput={(e) => {
          setQuery(e.currentTarget.value);
          setActive(0);
        }}
        onKeyDown={(e) => {
          if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
            e.preventDefault();
            const n = found.length || 1;
            // From the latest state: keys pressed faster than renders all count.
            setActive((a) => (Math.min(a, n - 1) + (e.key === 'ArrowDown' ? 1 : n - 1)) % n);
          } else if (e.key === 'Enter') {
            e.preventDefault();
            go(found[current]);
          }
        }}
      />
      <ul id="switcher-list" role="listbox" class="switcher" aria-label="Conversations">
        {found.map((d, i) => (
          <li
            key={d.key}
            id={`switch-${d.key}`}
            role="option"
            aria-selected={i === current}
            class={i === current ? 'active' : ''}
            onMouseDown={(e) => {
              e.preventDefault();
              go(d);
            }}
          >
            <span>{d.label}</span> <span class="muted">{d.hint}</span>
          </li>
        ))}
        {found.length === 0 && <li class="muted">Nothing matches.</li>}
      </ul>
      <p class="hint muted">
        <kbd>↑</kbd> <kbd>↓</kbd> to choose, <kbd>Enter</kbd> to open, <kbd>Esc</kbd> to close.
      </p>
    </Dialog>
  );
}

function Status() {
  const { store, close } = useUi();
  const [text, setText] = useState(store.statuses.get(store.me.id) ?? '');
  return (
    <Dialog id="status" title="Your status" onClose={close}>
      <form
        class="form"
        onSubmit={async (e) => {
          e.preventDefault();
          if (await store.setStatus(text.trim())) close();
        }}
      >
        <label for="status-text">What are you up to?</label>
        <input id="status-text" maxLength={140} placeholder="e.g. 🏖 away until Monday" value={text} onInput={(e) => setText(e.currentTarget.value)} />
        <p class="hint muted">Everyone in your workspaces sees it next to your name.</p>
        <div class="dialog-actions">
          <button
            type="button"
            class="link"
            onClick={async () => {
              if (await store.setStatus('')) close();
            }}
          >
            Clear
          </button>
          <button type="submit">Save status</button>
        </div>
      </form>
    </Dialog>
  );
}

function ConfirmDelete({ message }: { message: Message }) {
  const { store, close } = useUi();
  return (
    <Dialog id="delete" title="Delete this message?" onClose={close}>
      <blockquote class="md-quote">
        <Text text={message.text} ctx={textContext(store)} />
      </blockquote>
      <p class="muted">Everyone will see that a message was deleted here, not what it said.</p>
      <div class="dialog-actions">
        <button class="link" data-autofocus onClick={close}>
          Cancel
        </button>
        <button
          class="danger"
          onClick={async () => {
            close();
            await store.deleteMessage(message);
            // Its buttons are gone with it: the keyboard goes back to its box.
            if (!document.activeElement || document.activeElement === document.body) {
              document.getElementById(message.thread_id !== undefined ? 'thread-input' : 'composer-input')?.focus();
            }
          }}
        >
          Delete
        </button>
      </div>
    </Dialog>
  );
}
