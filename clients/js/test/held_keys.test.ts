// Held keys (the web app's IndexedDB form): the X25519 and Ed25519 private keys imported into WebCrypto
// non-extractable still open the Python SDK's vectors and sign the same bytes, and never give their bytes.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import {
  buildRecord, DeviceKeyPair, Envelope, KeyNotExtractable, Keyring, keyValidAt, openEnvelope, recipientFromKey, seal, toHex, verifyRecord,
} from "../src/index.js";

const VECTORS = JSON.parse(readFileSync(new URL("../../python/safeharbor_client/envelope_vectors.json", import.meta.url), "utf8"));
const all: Record<string, unknown>[] = [...VECTORS.extra_devices];
for (const v of VECTORS.positive) all.push(v.sender, ...v.devices);
const keys = all.map((d) => verifyRecord(DeviceKeyPair.fromPrivateJson(d).record));
const senderKey = (ref: Parameters<typeof keyValidAt>[0], at: number) => keyValidAt(ref, at, keys);

function ringOf(pair: DeviceKeyPair): Keyring {
  const ring = new Keyring(pair.userId, pair.deviceId);
  ring.add(pair);
  return ring;
}

test("a held pair's private keys are non-extractable CryptoKeys and its bytes cannot be read", async () => {
  const raw = DeviceKeyPair.generate({ userId: "u1", deviceId: "d1", version: 1, withPq: true });
  const held = await raw.toHeld();
  assert.equal(raw.extractable, true);
  assert.equal(held.extractable, false);
  for (const [key, name] of [[held.held!.sig, "Ed25519"], [held.held!.enc.privateKey, "X25519"]] as const) {
    assert.ok(key instanceof CryptoKey);
    assert.deepEqual([key.type, key.extractable, key.algorithm.name], ["private", false, name]);
    await assert.rejects(crypto.subtle.exportKey("jwk", key));
  }
  assert.equal(held.encPub, raw.encPub);
  assert.equal(held.sigPub, raw.sigPub);
  assert.throws(() => held.encPrivate, KeyNotExtractable);
  assert.throws(() => held.toPrivateJson(), KeyNotExtractable);
  assert.equal(held.pq, raw.pq, "ML-KEM-768 has no WebCrypto form: the hybrid part stays bytes");
});

for (const vec of VECTORS.positive) {
  test(`positive ${vec.name}: held keys open it as every listed device and sign its bytes`, async () => {
    for (const d of vec.devices) {
      const pair = await DeviceKeyPair.fromPrivateJson(d).toHeld();
      const opened = await openEnvelope(vec.envelope, { keyring: ringOf(pair), channelCid: vec.channel_cid, senderKey });
      assert.equal(opened.text, vec.plaintext);
    }
    const env = Envelope.parse(vec.envelope);
    const sender = await DeviceKeyPair.fromPrivateJson(vec.sender).toHeld();
    assert.equal(toHex(await sender.signAsync(env.signedBytes())), toHex(env.signature!), "WebCrypto's Ed25519 signs the same bytes");
  });
}

test("a held sender seals and a held recipient opens (x25519 suite)", async () => {
  const a = DeviceKeyPair.generate({ userId: "alice", deviceId: "a1", version: 1 });
  const b = DeviceKeyPair.generate({ userId: "bob", deviceId: "b1", version: 1 });
  a.record = buildRecord(a);
  b.record = buildRecord(b);
  const verified = [verifyRecord(a.record), verifyRecord(b.record)];
  const env = await seal({ text: "hello", sender: await a.toHeld(), recipients: verified.map(recipientFromKey), channelCid: "messaging:x" });
  const opened = await openEnvelope(env.toText(), {
    keyring: ringOf(await b.toHeld()), channelCid: "messaging:x", senderKey: (ref, at) => keyValidAt(ref, at, verified),
  });
  assert.equal(opened.text, "hello");
});
