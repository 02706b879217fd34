// Auditor console: entries with filters, server verification checked against the signed checkpoint
// (verified here with the log's pinned key), inclusion proofs of single entries, and export.
import { buf, fromHex, jcs, leafHash, openNote, parseVerifierKey, toHex, verifyCheckpoint, verifyInclusion } from "@safeharbor/client";
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
      <Compliance />
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

/** The HIPAA §164.312 report (audit-service): produced now or the latest kept, its signature and hash
 * checked here against the report key: the C2SP note names the report id and the SHA-256 of its JCS. */
function Compliance() {
  const [doc, setDoc] = useState<Row | null>(null);
  const [verdict, setVerdict] = useState<string | null>(null);

  async function load(path: string) {
    setVerdict("Measuring…");
    try {
      const [document, key] = await Promise.all([api<Row>("GET", path), api<string>("GET", "/v1/compliance/report/key")]);
      const report = document["report"] as Row;
      const digest = toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", buf(jcs(report)))));
      const lines = openNote(String(document["signature"]), [parseVerifierKey(key.trim())]).split("\n");
      const ok = lines[1] === report["format"] && lines[2] === report["report_id"] && lines[3] === `sha256 ${digest}` && document["sha256"] === digest;
      setDoc(report);
      setVerdict(ok ? `Signed report verified (sha256 ${digest.slice(0, 16)}…)` : "REPORT SIGNATURE DOES NOT MATCH ITS CONTENT");
    } catch (err) {
      setDoc(null);
      setVerdict(`No report: ${message(err)}`);
    }
  }

  const summary = (doc?.["summary"] ?? {}) as Record<string, number>;
  return (
    <section aria-label="Compliance report" className="compliance">
      <h2>Compliance report (45 CFR 164.312)</h2>
      <div className="inline">
        <button onClick={() => void load("/v1/compliance/report")}>Produce report now</button>
        <button onClick={() => void load("/v1/compliance/report/latest")}>Latest kept report</button>
      </div>
      {verdict && <p className={verdict.startsWith("Signed") ? "ok" : "error"} data-testid="compliance-verdict">{verdict}</p>}
      {doc && (
        <>
          <p data-testid="compliance-summary">{Object.entries(summary).map(([k, v]) => `${k}: ${v}`).join(" · ")}</p>
          <table>
            <thead><tr><th>control</th><th>service</th><th>status</th></tr></thead>
            <tbody>
              {(doc["controls"] as Row[]).map((c) => (
                <tr key={c["id"]} className={c["status"] === "fail" ? "alarm" : ""}><td>{c["title"] ?? c["id"]}</td><td>{c["service"]}</td><td>{c["status"]}</td></tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}
