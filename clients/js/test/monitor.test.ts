// Key monitoring and directory verification in JS against the real keydir-service (the Python SDK's
// test gateway around it, test/keydir_stack.py): this device, another device, a rotation made with a
// stolen key (the alarm), a revocation, lookups, and a tampered monitoring page refused. The log grows
// between calls, so each answer's checkpoint is checked for consistency with the remembered one.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  ALARM, buildRecord, DeviceKeyPair, DirectoryProofInvalid, DirectoryVerifier, type DirectoryMemory, Keyring, KeyRecordInvalid,
  monitorKeys, OTHER_DEVICE, THIS_DEVICE,
} from "../src/index.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const PYTHON = process.env["SAFEHARBOR_PYTHON"] ?? join(here, "../../../.venv/bin/python");
// Its logs are noise here; the one JSON line on stdout is all the test needs.
const server = spawn(PYTHON, [join(here, "keydir_stack.py")], { stdio: ["pipe", "pipe", "ignore"] });
let gateway = "";
let userId = "";
let token = "";

before(async () => {
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: server.stdout! }).on("line", (l) => { if (l.startsWith('{"gateway"')) resolve(l); });
    server.once("exit", (code) => reject(new Error(`keydir stack exited ${code}`)));
  });
  const info = JSON.parse(line) as { gateway: string; user_id: string; password: string };
  gateway = info.gateway;
  userId = info.user_id;
  const login = await fetch(`${gateway}/v1/auth/login`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ username: "mia", password: info.password }),
  });
  token = ((await login.json()) as { access_token: string }).access_token;
});

after(() => {
  server.stdin!.end();
});

async function call(method: string, path: string, body?: unknown): Promise<any> {
  const response = await fetch(gateway + path, {
    method, headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw Object.assign(new Error(text), { code: (JSON.parse(text).error ?? {}).code });
  return response.headers.get("Content-Type")?.includes("json") ? JSON.parse(text) : text;
}

function directory(memory: DirectoryMemory): DirectoryVerifier {
  return new DirectoryVerifier({
    memory, save: () => undefined,
    fetchVerifierKey: () => call("GET", "/v1/keys/checkpoint/key"),
    fetchConsistency: async (from, to) => (await call("GET", `/v1/keys/proof/consistency?from=${from}&to=${to}`)).proof,
  });
}

const phoneMemory: DirectoryMemory = {};

async function publish(pair: DeviceKeyPair, previous?: DeviceKeyPair): Promise<void> {
  pair.record = buildRecord(pair, previous);
  const answer = await call("POST", "/v1/keys", pair.record);
  const d = directory(phoneMemory);
  const checkpoint = await d.verifyCheckpoint(answer.checkpoint);
  d.verifyDevice({ record: answer.record, leaf_index: answer.leaf_index, inclusion_proof: answer.inclusion_proof }, userId, checkpoint);
}

const report = (ring: Keyring, memory: DirectoryMemory) => monitorKeys({
  ring, directory: directory(memory),
  fetchPage: (cursor) => call("GET", `/v1/keys/${userId}/audit${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ""}`),
});
const statuses = (r: Awaited<ReturnType<typeof report>>) => r.keys.map((k) => [k.key.ref.deviceId, k.key.ref.version, k.status]);

test("this device, another device, a stolen-key rotation raises the alarm, a revocation is shown", async () => {
  const phone = DeviceKeyPair.generate({ userId, deviceId: "phone", version: 1 });
  await publish(phone);
  const ring = new Keyring(userId, "phone");
  ring.add(phone);
  assert.deepEqual(statuses(await report(ring, phoneMemory)), [["phone", 1, THIS_DEVICE]]);

  const laptop = DeviceKeyPair.generate({ userId, deviceId: "laptop", version: 1, withPq: true });
  await publish(laptop);
  const second = await report(ring, phoneMemory);
  assert.deepEqual(statuses(second), [["phone", 1, THIS_DEVICE], ["laptop", 1, OTHER_DEVICE]]);
  assert.ok(second.checkpointSize >= 2 && second.alarms.length === 0);

  // Someone holding the phone's stolen v1 key rotates "phone" to a key the phone never made.
  const stolen = DeviceKeyPair.fromPrivateJson(phone.toPrivateJson());
  const attacker = DeviceKeyPair.generate({ userId, deviceId: "phone", version: 2 });
  await publish(attacker, stolen);
  const third = await report(ring, phoneMemory);
  assert.deepEqual(statuses(third), [["phone", 1, THIS_DEVICE], ["laptop", 1, OTHER_DEVICE], ["phone", 2, ALARM]]);
  assert.equal(third.alarms.length, 1);

  await call("POST", `/v1/keys/${userId}/devices/laptop/revoke`, { reason: "lost" });
  const fourth = await report(ring, phoneMemory);
  const revoked = fourth.keys.find((k) => k.key.ref.deviceId === "laptop")!;
  assert.ok(revoked.revokedAt !== null && revoked.revocationReason === "lost");

  // A fresh client (no memory) agrees, and lookups verify against the same log.
  const fresh: DirectoryMemory = {};
  assert.deepEqual(statuses(await report(ring, fresh)), statuses(fourth));
  const found = await directory(fresh).verifyLookup(await call("GET", `/v1/keys?users=${userId},nobody`), [userId, "nobody"]);
  assert.deepEqual(found.get(userId)!.devices.map((d) => [d.key.ref.deviceId, d.key.ref.version]), [["phone", 2]]);
  assert.equal(found.get("nobody")!.error, "not_found");
});

test("a monitoring page with a changed record or a wrong kind label is refused", async () => {
  const page = await call("GET", `/v1/keys/${userId}/audit`);
  const ring = new Keyring(userId, "phone");
  const changed = structuredClone(page);
  changed.leaves[0].record.created_at = "2030-01-01T00:00:00.000000Z";
  await assert.rejects(monitorKeys({ ring, directory: directory({}), fetchPage: async () => changed }), DirectoryProofInvalid);
  const relabelled = structuredClone(page);
  relabelled.leaves[0].kind = "revocation";
  await assert.rejects(monitorKeys({ ring, directory: directory({}), fetchPage: async () => relabelled }), KeyRecordInvalid);
});
