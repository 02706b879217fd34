// Admin console: users (create, role, deactivate/reactivate, sessions), push templates with the linter's
// findings shown where they are, and the break-glass review queue.
import { type FormEvent, useEffect, useState } from "react";
import { ApiError, api } from "./api";

type Row = Record<string, any>;
const list = (body: any, key: string): Row[] => (Array.isArray(body) ? body : (body?.[key] ?? []));
const message = (err: unknown) => (err instanceof ApiError ? `${err.message} (${err.code})` : String(err));

export function Admin() {
  return (
    <main className="console">
      <Users />
      <PushTemplates />
      <BreakGlass />
    </main>
  );
}

function Users() {
  const [users, setUsers] = useState<Row[]>([]);
  const [sessions, setSessions] = useState<{ user: string; rows: Row[] } | null>(null);
  const [form, setForm] = useState({ username: "", name: "", role: "patient", password: "" });
  const [status, setStatus] = useState<string | null>(null);
  const reload = () => api("GET", "/v1/users").then((b) => setUsers(list(b, "users"))).catch((e) => setStatus(message(e)));
  useEffect(() => { void reload(); }, []);

  async function act(label: string, action: () => Promise<unknown>) {
    try {
      await action();
      setStatus(`${label}: done`);
      await reload();
    } catch (err) {
      setStatus(`${label}: ${message(err)}`);
    }
  }

  const create = (e: FormEvent) => { e.preventDefault(); void act(`Create ${form.username}`, () => api("POST", "/v1/users", form)); };

  return (
    <section aria-label="Users">
      <h2>Users</h2>
      <table data-testid="users">
        <thead><tr><th>username</th><th>name</th><th>role</th><th>status</th><th /></tr></thead>
        <tbody>
          {users.map((u) => (
            <tr key={u.id} data-username={u.username}>
              <td>{u.username}</td><td>{u.name}</td>
              <td>
                <select aria-label={`role of ${u.username}`} value={u.role} onChange={(e) => void act(`Role of ${u.username}`, () => api("PATCH", `/v1/users/${u.id}`, { role: e.target.value }))}>
                  {["clinician", "billing", "patient", "admin", "auditor"].map((r) => <option key={r}>{r}</option>)}
                </select>
              </td>
              <td>{u.status}</td>
              <td>
                {u.status === "deactivated"
                  ? <button onClick={() => void act(`Reactivate ${u.username}`, () => api("POST", `/v1/users/${u.id}/reactivate`))}>Reactivate</button>
                  : <button onClick={() => void act(`Deactivate ${u.username}`, () => api("POST", `/v1/users/${u.id}/deactivate`))}>Deactivate</button>}
                <button onClick={() => void api("GET", `/v1/users/${u.id}/sessions`).then((b) => setSessions({ user: u.id, rows: list(b, "sessions") }))}>Sessions</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {sessions && (
        <table data-testid="sessions">
          <thead><tr><th>session</th><th>expires</th><th /></tr></thead>
          <tbody>
            {sessions.rows.map((s) => (
              <tr key={s.id}><td>{s.id}</td><td>{s.expires_at}</td>
                <td><button onClick={() => void act("End session", () => api("DELETE", `/v1/users/${sessions.user}/sessions/${s.id}`))}>End</button></td></tr>
            ))}
          </tbody>
        </table>
      )}
      <form onSubmit={create} className="inline" aria-label="New user">
        {(["username", "name", "password"] as const).map((f) => (
          <label key={f}>{f} <input name={f} type={f === "password" ? "password" : "text"} value={form[f]} onChange={(e) => setForm({ ...form, [f]: e.target.value })} required /></label>
        ))}
        <select name="role" value={form.role} onChange={(e) => setForm({ ...form, role: e.target.value })}>
          {["clinician", "billing", "patient", "admin", "auditor"].map((r) => <option key={r}>{r}</option>)}
        </select>
        <button type="submit">Create user</button>
      </form>
      {status && <p className="status" data-testid="admin-status">{status}</p>}
    </section>
  );
}

function PushTemplates() {
  const [provider, setProvider] = useState("apn");
  const [kind, setKind] = useState("notification");
  const [template, setTemplate] = useState('{"aps":{"alert":{"title":"New secure message","body":"Open the app to view."}}}');
  const [findings, setFindings] = useState<Row[] | null>(null);
  const [status, setStatus] = useState<string | null>(null);
  const lines = template.split("\n");

  async function lint() {
    const body = await api<{ ok: boolean; findings: Row[] }>("POST", "/v1/push/lint", { provider, kind, template });
    setFindings(body.findings);
    return body.ok;
  }

  async function apply() {
    try {
      if (!(await lint())) return setStatus("Not applied: fix the findings first.");
      const body = await api<{ version: number }>("PUT", "/v1/push/templates", { provider, kind, template });
      setStatus(`Applied as version ${body.version}.`);
    } catch (err) {
      if (err instanceof ApiError && Array.isArray(err.body["findings"])) setFindings(err.body["findings"] as Row[]);
      setStatus(message(err));
    }
  }

  return (
    <section aria-label="Push templates">
      <h2>Push templates</h2>
      <div className="inline">
        <select value={provider} onChange={(e) => setProvider(e.target.value)}><option>apn</option><option>firebase</option></select>
        <select value={kind} onChange={(e) => setKind(e.target.value)}><option>notification</option><option>data</option></select>
      </div>
      <div className="template">
        <textarea name="template" rows={Math.max(4, lines.length + 1)} value={template} onChange={(e) => { setTemplate(e.target.value); setFindings(null); }} />
        {findings && (
          <ol className="lines" data-testid="lint-findings">
            {lines.map((line, i) => {
              const here = findings.filter((f) => f.line === i + 1);
              return (
                <li key={i} className={here.length ? "flagged" : ""}>
                  <code>{line || " "}</code>
                  {here.map((f, j) => <span key={j} className="finding">↳ col {f.column}: {f.rule}: {f.text}</span>)}
                </li>
              );
            })}
            {findings.length === 0 && <li className="ok">No findings.</li>}
          </ol>
        )}
      </div>
      <button onClick={() => void lint().catch((e) => setStatus(message(e)))}>Lint</button>
      <button onClick={() => void apply()}>Apply</button>
      {status && <p className="status">{status}</p>}
    </section>
  );
}

function BreakGlass() {
  const [rows, setRows] = useState<Row[]>([]);
  const [note, setNote] = useState("");
  const reload = () => api("GET", "/v1/break-glass").then((b) => setRows(list(b, "break_glass"))).catch(() => setRows([]));
  useEffect(() => { void reload(); }, []);
  return (
    <section aria-label="Break-glass review">
      <h2>Break-glass review</h2>
      {rows.length === 0 ? <p>No break-glass sessions.</p> : (
        <table>
          <thead><tr><th>when</th><th>who</th><th>channel</th><th>reason</th><th>review</th></tr></thead>
          <tbody>
            {rows.map((r) => (
              <tr key={r.id ?? r.break_glass_id}>
                <td>{r.created_at}</td><td>{r.user_id}</td><td>{r.scope?.channel_cid ?? r.channel_cid}</td><td>{r.reason}</td>
                <td>{r.reviewed_at ? `reviewed: ${r.review_note ?? ""}` : (
                  <span><input aria-label="review note" value={note} onChange={(e) => setNote(e.target.value)} />
                    <button onClick={() => void api("POST", `/v1/break-glass/${r.id ?? r.break_glass_id}/review`, { note }).then(reload)}>Mark reviewed</button></span>
                )}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
