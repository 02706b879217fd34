// Interop with the Python SDK, both directions, both suites: JS makes device keys; Python verifies their
// records, seals to them (X25519 and the ML-KEM-768 hybrid), backs up a keyring and publishes a Merkle
// log; JS checks all of it and then seals to the Python devices and backs up its own keyring, which
// Python opens. Python runs from the repository's .venv (SAFEHARBOR_PYTHON overrides).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  buildRecord, DeviceKeyPair, DirectoryInconsistent, DirectoryProofInvalid, DirectoryVerifier, EnvelopeTampered,
  Keyring, keyValidAt, MIN_KDF, openBackup, openEnvelope, recipientFromKey, seal, sealBackup, SUITE_PQ, SUITE_X25519,
  utf8, verifyChain, verifyRecord, type DirectoryMemory, type VerifiedKey,
} from "../src/index.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const PYTHON = process.env["SAFEHARBOR_PYTHON"] ?? join(here, "../../../.venv/bin/python");
const dir = mkdtempSync(join(tmpdir(), "sh-interop-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const CID = "clinical:interop-room";

function python(command: "make" | "open", input: unknown): Record<string, any> {
  const inPath = join(dir, `${command}-in.json`);
  const outPath = join(dir, `${command}-out.json`);
  writeFileSync(inPath, JSON.stringify(input));
  execFileSync(PYTHON, [join(here, "interop.py"), command, inPath, outPath], { stdio: ["ignore", "inherit", "inherit"] });
  return JSON.parse(readFileSync(outPath, "utf8"));
}

// JS devices: one X25519-only, one with the hybrid post-quantum key.
const jsPlain = DeviceKeyPair.generate({ userId: "js-bob", deviceId: "browser", version: 1 });
jsPlain.record = buildRecord(jsPlain);
const jsHybrid = DeviceKeyPair.generate({ userId: "js-bob", deviceId: "phone", version: 1, withPq: true });
jsHybrid.record = buildRecord(jsHybrid);
const jsRing = new Keyring("js-bob", "browser");
jsRing.add(jsPlain);
jsRing.add(jsHybrid);

const py = python("make", { records: [jsPlain.record, jsHybrid.record] });
const pyKeys: VerifiedKey[] = py["records"].map((r: Record<string, unknown>) => r["version"] === 2
  ? verifyRecord(r, { previous: py["records"][0] }) : verifyRecord(r));
const allKeys = [...pyKeys, verifyRecord(jsPlain.record), verifyRecord(jsHybrid.record)];
const lookup = (ref: Parameters<typeof keyValidAt>[0], at: number) => keyValidAt(ref, at, allKeys);

test("Python verifies the JS-made key records (the hybrid one included)", () => {
  assert.equal(py["js_records_verified"], 2);
  assert.equal(py["js_hybrid"], 1);
});

test("JS verifies the Python-made records and the rotation chain", () => {
  assert.equal(pyKeys.length, 3);
  assert.ok(pyKeys[1]!.pqPub, "the hybrid record carries pq_pub");
  verifyChain(pyKeys);
  const tampered = { ...py["records"][2], prev_hash: py["records"][2].prev_hash.replace(/^./, "A") === py["records"][2].prev_hash ? "B" : "A" };
  assert.throws(() => verifyRecord(tampered, { previous: py["records"][0] }));
});

test("Python makes, JS opens: both suites", async () => {
  const suites = [];
  for (const item of py["envelopes"]) {
    const device = item.suite === SUITE_PQ ? jsHybrid : jsPlain;
    const ring = new Keyring("js-bob", device.deviceId);
    ring.add(device);
    const opened = await openEnvelope(item.text, { keyring: ring, channelCid: CID, senderKey: lookup });
    assert.equal(opened.text, item.plaintext);
    assert.equal(opened.suite, item.suite);
    suites.push(opened.suite);
  }
  assert.deepEqual(suites.sort(), [SUITE_PQ, SUITE_X25519]);
});

test("Python's password backup opens in JS, and a wrong password is refused", async () => {
  const b = py["backup"];
  const plain = await openBackup(b.blob, { password: b.password, userId: "py-alice", keyVersion: b.key_version });
  const ring = Keyring.fromJson(JSON.parse(new TextDecoder().decode(plain)));
  assert.deepEqual(ring.toJson(), b.keyring);
  await assert.rejects(openBackup(b.blob, { password: b.password + "!", userId: "py-alice", keyVersion: b.key_version }),
    { code: "backup_password_invalid" });
  await assert.rejects(openBackup(b.blob, { password: b.password, userId: "someone-else", keyVersion: b.key_version }),
    { code: "backup_password_invalid" });
});

function verifier(memory: DirectoryMemory, consistency: string[]): DirectoryVerifier {
  return new DirectoryVerifier({
    memory, save: () => undefined, pinnedKey: py["log"].verifier_key,
    fetchVerifierKey: async () => py["log"].verifier_key, fetchConsistency: async () => consistency,
  });
}

test("Python's log: checkpoint, inclusion proofs and consistency verify in JS; tampering is refused", async () => {
  const log = py["log"];
  const memory: DirectoryMemory = {};
  const v = verifier(memory, log.consistency);
  const old = await v.verifyCheckpoint(log.old_checkpoint);
  assert.equal(old.size, 2);
  const checkpoint = await v.verifyCheckpoint(log.checkpoint); // consistency proof from 2 to 5
  assert.equal(memory.checkpoint?.size, 5);
  for (const leaf of log.leaves) v.verifyDevice(leaf, leaf.record.user_id, checkpoint);
  const bad = { ...log.leaves[3], record: { ...log.leaves[3].record, created_at: "2030-01-01T00:00:00Z" } };
  assert.throws(() => v.verifyDevice(bad, "py-alice", checkpoint), DirectoryProofInvalid);
  // A fork: a remembered checkpoint with a wrong proof between the two sizes.
  const forked = verifier({}, log.consistency.slice(1));
  await forked.verifyCheckpoint(log.old_checkpoint);
  await assert.rejects(forked.verifyCheckpoint(log.checkpoint), DirectoryInconsistent);
  const note = log.checkpoint.replace(/\n(\d+)\n/, (_m: string, n: string) => `\n${Number(n) + 1}\n`);
  await assert.rejects(verifier({}, []).verifyCheckpoint(note), DirectoryProofInvalid);
});

test("JS makes, Python opens: both suites, a tampered one refused, and JS's backup", async () => {
  const pyPlain = pyKeys[0]!;
  const pyHybrid = pyKeys[1]!;
  const x = await seal({ text: "From JS, classic suite: Zürich ✓", sender: jsPlain, channelCid: CID,
    recipients: [recipientFromKey(pyPlain), recipientFromKey(verifyRecord(jsPlain.record))] });
  const pq = await seal({ text: "From JS, post-quantum suite", sender: jsHybrid, channelCid: CID, maxChars: 1 << 20,
    recipients: [recipientFromKey(pyHybrid), recipientFromKey(verifyRecord(jsHybrid.record))] });
  assert.equal(x.suite, SUITE_X25519);
  assert.equal(pq.suite, SUITE_PQ);
  const data = JSON.parse(x.toText());
  data.ts += 1;
  const tampered = JSON.stringify(data);
  // JS refuses its own tampered envelope the same way Python does.
  await assert.rejects(openEnvelope(tampered, { keyring: jsRing, channelCid: CID, senderKey: lookup }), EnvelopeTampered);
  const blob = await sealBackup(utf8(JSON.stringify(jsRing.toJson())), { password: "js backup password 2026", userId: "js-bob", keyVersion: 1, params: MIN_KDF });
  const out = python("open", {
    python_private: py["private"],
    js_records: [jsPlain.record, jsHybrid.record],
    envelopes: [{ text: x.toText() }, { text: pq.toText() }, { text: tampered }, { text: x.toText(), cid: "clinical:other" }],
    backup: { blob, password: "js backup password 2026", user_id: "js-bob", key_version: 1 },
  });
  assert.deepEqual(out["opened"][0], { text: "From JS, classic suite: Zürich ✓", suite: "x25519", sender: ["js-bob", "browser", 1],
    fingerprint: verifyRecord(jsPlain.record).fingerprint });
  assert.equal(out["opened"][1].text, "From JS, post-quantum suite");
  assert.equal(out["opened"][1].suite, "mlkem768x25519");
  assert.deepEqual(out["opened"][2], { error: "envelope_tampered" });
  assert.deepEqual(out["opened"][3], { error: "misaddressed_message" });
  assert.deepEqual(out["backup_keyring"], jsRing.toJson());
  assert.equal(out["wrong_password"], "backup_password_invalid");
});
