// Auditor console: entries with filters, server verification checked against the signed checkpoint
// (verified here with the log's pinned key), inclusion proofs of single entries, and export.
import { fromHex, leafHash, verifyCheckpoint, verifyInclusion } from "@safeharbor/client";
import { type FormEvent, useEffect, useState } from "react";
import { ApiError, api } from "./api";

type Row = Record<string, any>;
const message = (err: unknown) => (err instanceof ApiError ? `${err.message} (${err.code})` : err instanceof Error ? err.message : String(err));

export function Auditor() {
  const [entries, setEntries] = useState<Row[]>([]);
  const [filter, setFilter] = useState({ actor: "", action: "" });
  const [verdict, setVerdict] = useState<string | null>(null);
  const [proofs, setProofs] = useState<Record<number, string>>({});
  const [exportUrl, setExportUrl] = useState<string | null>(null);

  async function load(e?: FormEvent) {
    e?.preventDefault();
    const q = new URLSearchParams({ limit: "50", ...Object.fromEntries(Object.entries(filter).filter(([, v]) => v)) });
    const body = await api<{ entries: Row[] }>("GET", `/v1/audit/entries?${q}`);
    setEntries(body.entries);
  }
  useEffect(() => { void load().catch((err) => setVerdict(message(err))); }, []);

  async function checkpoint() {
    const [note, key] = await Promise.all([api<string>("GET", "/v1/audit/checkpoint"), api<string>("GET", "/v1/audit/checkpoint/key")]);
    return verifyCheckpoint(note, key.trim());
  }

  async function verify() {
    try {
      const signed = await checkpoint();
      const body = await api<Row>("GET", "/v1/audit/verify");
      const ok = body["ok"] === true && Number(body["size"]) >= signed.size;
      setVerdict(ok ? `Verified: ${body["size"]} entries, chain and tree intact; signed checkpoint of size ${signed.size} checks out.`
        : `VERIFICATION FAILED: first bad entry ${body["first_bad_seq"]}.`);
    } catch (err) {
      setVerdict(`VERIFICATION FAILED: ${message(err)}`);
    }
  }

  async function prove(entry: Row) {
    try {
      const signed = await checkpoint();
      if (entry["seq"] >= signed.size) return setProofs((p) => ({ ...p, [entry["seq"]]: "not in the signed checkpoint yet" }));
      const body = await api<{ proof: string[] }>("GET", `/v1/audit/proof/inclusion?index=${entry["seq"]}&size=${signed.size}`);
      verifyInclusion(leafHash(fromHex(entry["hash"])), entry["seq"], signed.size, body.proof.map(fromHex), signed.root);
      setProofs((p) => ({ ...p, [entry["seq"]]: `included in checkpoint ${signed.size}` }));
    } catch (err) {
      setProofs((p) => ({ ...p, [entry["seq"]]: `PROOF FAILED: ${message(err)}` }));
    }
  }

  async function exportJsonl() {
    const text = await api<string>("GET", "/v1/audit/export?format=jsonl");
    if (exportUrl) URL.revokeObjectURL(exportUrl);
    setExportUrl(URL.createObjectURL(new Blob([typeof text === "string" ? text : JSON.stringify(text)], { type: "application/x-ndjson" })));
  }

  return (
    <main className="console" aria-label="Audit">
      <h2>Audit trail</h2>
      <div className="inline">
        <button onClick={() => void verify()} data-testid="audit-verify">Verify the log</button>
        <button onClick={() => void exportJsonl().catch((e) => setVerdict(message(e)))}>Export JSONL</button>
        {exportUrl && <a href={exportUrl} download="audit.jsonl">Download export</a>}
      </div>
      {verdict && <p className={verdict.startsWith("Verified") ? "ok" : "error"} data-testid="audit-verdict">{verdict}</p>}
      <form onSubmit={(e) => void load(e).catch((err) => setVerdict(message(err)))} className="inline">
        <label>actor <input value={filter.actor} onChange={(e) => setFilter({ ...filter, actor: e.target.value })} /></label>
        <label>action <input value={filter.action} onChange={(e) => setFilter({ ...filter, action: e.target.value })} /></label>
        <button type="submit">Filter</button>
      </form>
      <table data-testid="audit-entries">
        <thead><tr><th>seq</th><th>time</th><th>actor</th><th>role</th><th>action</th><th>resource</th><th>outcome</th><th>proof</th></tr></thead>
        <tbody>
          {entries.map((e) => (
            <tr key={e.seq}>
              <td>{e.seq}</td><td>{e.ts}</td><td>{e.actor}</td><td>{e.role}</td><td>{e.action}</td><td>{e.resource}</td><td>{e.outcome}</td>
              <td>{proofs[e.seq] ?? <button onClick={() => void prove(e)}>Prove</button>}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </main>
  );
}
