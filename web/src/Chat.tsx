// End-to-end encrypted chat: Stream (the official stream-chat client, through this origin's /stream
// proxy) carries only envelopes; every message is sealed and opened in this page with clients/js.
import { type KeyMonitorReport, SafeHarborClientError } from "@safeharbor/client";
import { type FormEvent, useEffect, useMemo, useRef, useState } from "react";
import { type Channel, StreamChat } from "stream-chat";
import { api, type Session } from "./api";
import { E2ee } from "./e2ee";

interface Shown {
  text?: string;
  error?: string;
  sender?: string;
  fingerprint?: string;
  suite?: string;
}

export function Chat({ session }: { session: Session }) {
  const [e2ee, setE2ee] = useState<E2ee | null>(null);
  const [, setVersion] = useState(0);
  const [error, setError] = useState<string | null>(null);
  const refresh = () => setVersion((v) => v + 1);

  useEffect(() => {
    void E2ee.load(session.user.id).then(setE2ee).catch((err) => setError(String(err)));
  }, [session.user.id]);

  if (!e2ee) return <p>{error ?? "Loading keys…"}</p>;
  return (
    <main className="chat">
      <p className="me">Your user id: <code data-testid="my-user-id">{session.user.id}</code></p>
      <Keys e2ee={e2ee} onChange={refresh} />
      {e2ee.ready ? <Conversations e2ee={e2ee} session={session} /> : <p>Set up this device's keys to read and send messages.</p>}
    </main>
  );
}

function Keys({ e2ee, onChange }: { e2ee: E2ee; onChange: () => void }) {
  const [password, setPassword] = useState("");
  const [status, setStatus] = useState<string | null>(null);
  const [report, setReport] = useState<KeyMonitorReport | null>(null);
  const [withPq, setWithPq] = useState(false);

  async function run(label: string, action: () => Promise<unknown>) {
    setStatus(`${label}…`);
    try {
      const result = await action();
      setStatus(`${label}: done${typeof result === "number" ? ` (${result} key(s) restored)` : ""}`);
      onChange();
    } catch (err) {
      setStatus(`${label} failed: ${err instanceof SafeHarborClientError || err instanceof Error ? err.message : String(err)}`);
    }
  }

  const backup = (e: FormEvent) => { e.preventDefault(); void run("Backup", () => e2ee.backup(password)); };
  const restore = () => void run("Restore", () => e2ee.restore(password));

  return (
    <section className="keys" aria-label="Device keys">
      <h2>This device</h2>
      {e2ee.ready ? (
        <p>Device <code data-testid="device-id">{e2ee.deviceId}</code> · safety number <code data-testid="fingerprint">{e2ee.fingerprint()}</code></p>
      ) : (
        <p>
          <button data-testid="init-keys" onClick={() => void run("Key setup", () => e2ee.initKeys(withPq))}>Create keys for this device</button>
          <label><input type="checkbox" checked={withPq} onChange={(e) => setWithPq(e.target.checked)} /> post-quantum (ML-KEM-768)</label>
        </p>
      )}
      <form onSubmit={backup} className="inline">
        <label>Backup password <input type="password" name="backup-password" value={password} onChange={(e) => setPassword(e.target.value)} minLength={12} /></label>
        {e2ee.canBackUp && <button type="submit">Back up keys</button>}
        <button type="button" onClick={restore}>Restore from backup</button>
        {e2ee.ready && <button type="button" onClick={() => void run("Key check", async () => setReport(await e2ee.monitor()))}>Check my keys</button>}
      </form>
      {e2ee.ready && !e2ee.canBackUp && (
        <p className="hint" data-testid="backup-hint">This device's private keys are stored non-extractable: a backup can only be made right after creating or restoring them.</p>
      )}
      {status && <p className="status" data-testid="keys-status">{status}</p>}
      {report && (
        <div data-testid="key-report">
          {report.alarms.length > 0 && (
            <p className="error" role="alert">ALARM: a key for this device that this device never made is in the directory. Revoke it and tell your administrator.</p>
          )}
          <table>
            <thead><tr><th>device</th><th>version</th><th>safety number</th><th>status</th><th>revoked</th></tr></thead>
            <tbody>
              {report.keys.map((k) => (
                <tr key={`${k.key.ref.deviceId}/${k.key.ref.version}`} className={k.status}>
                  <td>{k.key.ref.deviceId}</td><td>{k.key.ref.version}</td><td><code>{k.key.fingerprint}</code></td>
                  <td>{k.status.replace("_", " ")}</td><td>{k.revokedAt ? new Date(k.revokedAt).toISOString() : ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

function Conversations({ e2ee, session }: { e2ee: E2ee; session: Session }) {
  const [client, setClient] = useState<StreamChat | null>(null);
  const [channels, setChannels] = useState<Channel[]>([]);
  const [allowed, setAllowed] = useState<string[]>([]);
  const [active, setActive] = useState<Channel | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let chat: StreamChat | null = null;
    void (async () => {
      const creds = await api<{ apiKey: string; token: string; user: { id: string } }>("POST", "/v1/stream-credentials");
      chat = new StreamChat(creds.apiKey, { baseURL: `${location.origin}/stream`, timeout: 10000 });
      await chat.connectUser({ id: creds.user.id }, creds.token);
      const filter = await api<{ filter: Record<string, unknown>; allowed_types: string[] }>("GET", "/v1/channels/filter");
      setAllowed(filter.allowed_types);
      setChannels(await chat.queryChannels(filter.filter as never, {}, { watch: true, state: true }));
      setClient(chat);
    })().catch((err) => setError(`Chat is unavailable: ${err instanceof Error ? err.message : String(err)}`));
    return () => { void chat?.disconnectUser(); };
  }, [session.user.id]);

  async function reload() {
    if (!client) return;
    const filter = await api<{ filter: Record<string, unknown> }>("GET", "/v1/channels/filter");
    setChannels(await client.queryChannels(filter.filter as never, {}, { watch: true, state: true }));
  }

  async function open(type: string, members: string[]) {
    if (!client) return;
    const made = await api<{ type: string; id: string }>("POST", "/v1/channels", { type, members });
    const channel = client.channel(made.type, made.id);
    await channel.watch();
    setChannels((list) => [channel, ...list.filter((c) => c.cid !== channel.cid)]);
    setActive(channel);
  }

  if (error) return <p className="error" role="alert">{error}</p>;
  if (!client) return <p>Connecting…</p>;
  return (
    <div className="conversations">
      <aside>
        <h2>Conversations <button onClick={() => void reload().catch((err) => setError(String(err)))}>Refresh</button></h2>
        <ul data-testid="channel-list">
          {channels.map((c) => (
            <li key={c.cid}><button className={active?.cid === c.cid ? "active" : ""} onClick={() => setActive(c)}>{c.cid}</button></li>
          ))}
        </ul>
        <NewConversation allowed={allowed} onOpen={(t, m) => open(t, m).catch((err) => setError(String(err)))} />
        <p className="allowed" data-testid="allowed-types">Your role may use: {allowed.join(", ") || "no channels"}</p>
      </aside>
      {active ? <Conversation key={active.cid} channel={active} e2ee={e2ee} /> : <p>Pick or start a conversation.</p>}
    </div>
  );
}

function NewConversation({ allowed, onOpen }: { allowed: string[]; onOpen: (type: string, members: string[]) => void }) {
  const [type, setType] = useState("");
  const [members, setMembers] = useState("");
  if (!allowed.length) return null;
  const submit = (e: FormEvent) => {
    e.preventDefault();
    onOpen(type || allowed[0]!, members.split(/[\s,]+/).filter(Boolean));
  };
  return (
    <form onSubmit={submit} aria-label="New conversation">
      <label>Type <select name="type" value={type || allowed[0]} onChange={(e) => setType(e.target.value)}>{allowed.map((t) => <option key={t}>{t}</option>)}</select></label>
      <label>Member user ids <input name="members" value={members} onChange={(e) => setMembers(e.target.value)} required /></label>
      <button type="submit">Open</button>
    </form>
  );
}

function Conversation({ channel, e2ee }: { channel: Channel; e2ee: E2ee }) {
  const [messages, setMessages] = useState(channel.state.messages.slice());
  const [shown, setShown] = useState<Record<string, Shown>>({});
  const [draft, setDraft] = useState("");
  const [status, setStatus] = useState<string | null>(null);
  const opening = useRef(new Set<string>());

  useEffect(() => {
    const sub = channel.on((event) => {
      if (event.type?.startsWith("message.")) setMessages(channel.state.messages.slice());
    });
    return () => sub.unsubscribe();
  }, [channel]);

  useEffect(() => {
    for (const m of messages) {
      if (opening.current.has(m.id) || !m.text) continue;
      opening.current.add(m.id);
      void e2ee.open({ cid: channel.cid, text: m.text, messageId: m.id, userId: m.user?.id, createdAt: m.created_at ?? undefined })
        .then((o) => ({ text: o.text, sender: `${o.sender.userId}/${o.sender.deviceId} v${o.sender.version}`, fingerprint: o.senderFingerprint, suite: o.suite }))
        .catch((err: unknown) => ({ error: err instanceof SafeHarborClientError ? err.code : String(err) }))
        .then((result: Shown) => setShown((s) => ({ ...s, [m.id]: result })));
    }
  }, [messages, channel.cid, e2ee]);

  const members = useMemo(() => Object.keys(channel.state.members), [channel, messages]);

  async function send(e: FormEvent) {
    e.preventDefault();
    setStatus("Encrypting…");
    try {
      const sealed = await e2ee.seal(channel.cid, members, draft);
      await channel.sendMessage({ id: sealed.id, text: sealed.envelope });
      setDraft("");
      setStatus(`Sent end-to-end encrypted to ${sealed.devices} device(s) (${sealed.suite}).`);
    } catch (err) {
      setStatus(`Not sent: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  return (
    <section className="conversation" aria-label={`Conversation ${channel.cid}`}>
      <h2>{channel.cid}</h2>
      <ol className="messages" data-testid="messages">
        {messages.map((m) => {
          const s = shown[m.id];
          return (
            <li key={m.id} className={s?.error ? "refused" : "verified"} data-testid="message">
              {!s && <span>Decrypting…</span>}
              {s?.text !== undefined && (
                <>
                  <span className="badge" title={`safety number ${s.fingerprint}`}>verified · {s.sender}</span>
                  <span className="text" data-testid="message-text">{s.text}</span>
                </>
              )}
              {s?.error && <span className="error" data-testid="message-error">refused: {s.error}</span>}
            </li>
          );
        })}
      </ol>
      <form onSubmit={send} className="compose">
        <input name="message" aria-label="Message" value={draft} onChange={(e) => setDraft(e.target.value)} required autoComplete="off" />
        <button type="submit">Send</button>
      </form>
      {status && <p className="status" data-testid="send-status">{status}</p>}
    </section>
  );
}
