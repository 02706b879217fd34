// The Python SDK's envelope vectors (clients/python/safeharbor_client/envelope_vectors.json) in JS:
// every intermediate byte string reproduces, every positive vector opens as every listed device (the
// post-quantum one included), every negative vector is refused with the stated code.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ed25519 } from "@noble/curves/ed25519.js";
import {
  b64urlDecode, buf, DeviceKeyPair, Envelope, EnvelopeError, fromHex, jcs, Keyring, keyValidAt, openEnvelope, pad, toHex,
  verifyRecord, type VerifiedKey,
} from "../src/index.js";

const VECTORS = JSON.parse(readFileSync(new URL("../../python/safeharbor_client/envelope_vectors.json", import.meta.url), "utf8"));
type Dev = Record<string, unknown>;

function devices(): Map<string, DeviceKeyPair> {
  const all: Dev[] = [...VECTORS.extra_devices];
  for (const v of VECTORS.positive) all.push(v.sender, ...v.devices);
  const out = new Map<string, DeviceKeyPair>();
  for (const d of all) {
    const pair = DeviceKeyPair.fromPrivateJson(d);
    out.set(`${pair.userId}/${pair.deviceId}`, pair);
  }
  return out;
}

function lookup(keys: VerifiedKey[]) {
  return (ref: Parameters<typeof keyValidAt>[0], at: number) => keyValidAt(ref, at, keys);
}

function ringOf(pair: DeviceKeyPair): Keyring {
  const ring = new Keyring(pair.userId, pair.deviceId);
  ring.add(pair);
  return ring;
}

const all = devices();
const keys = [...all.values()].map((p) => verifyRecord(p.record));

test("the vectors cover both suites and every error code of the table", () => {
  assert.deepEqual(VECTORS.positive.map((v: Dev) => v["suite"]).sort(), ["mlkem768x25519", "x25519"]);
  assert.ok(VECTORS.negative.length >= 10);
});

for (const vec of VECTORS.positive) {
  test(`positive ${vec.name}: intermediate bytes reproduce`, async () => {
    const env = Envelope.parse(vec.envelope);
    assert.equal(env.toText(), vec.envelope, "wire form is canonical JSON");
    assert.equal(toHex(env.wrapInfo()), vec.wrap_info_hex);
    assert.equal(toHex(env.contentAad()), vec.content_aad_hex);
    assert.equal(toHex(env.signedBytes()), vec.signed_bytes_hex);
    assert.equal(toHex(pad(jcs({ text: vec.plaintext }))), vec.payload_padded_hex);
    const key = await crypto.subtle.importKey("raw", buf(b64urlDecode(vec.content_key)), "AES-GCM", false, ["encrypt"]);
    const ct = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: buf(b64urlDecode(vec.nonce)), additionalData: buf(env.contentAad()) }, key, buf(fromHex(vec.payload_padded_hex)));
    assert.equal(toHex(new Uint8Array(ct)), toHex(env.ciphertext), "content ciphertext reproduces");
    const sender = DeviceKeyPair.fromPrivateJson(vec.sender);
    assert.equal(toHex(sender.sign(env.signedBytes())), toHex(env.signature!), "Ed25519 is deterministic");
    assert.ok(ed25519.verify(env.signature!, env.signedBytes(), b64urlDecode(sender.sigPub)));
  });

  test(`positive ${vec.name}: opens as every listed device`, async () => {
    for (const d of vec.devices) {
      const pair = DeviceKeyPair.fromPrivateJson(d);
      const opened = await openEnvelope(vec.envelope, { keyring: ringOf(pair), channelCid: vec.channel_cid, senderKey: lookup(keys) });
      assert.equal(opened.text, vec.plaintext);
      assert.equal(opened.suite, vec.suite);
    }
  });
}

for (const vec of VECTORS.negative) {
  test(`negative ${vec.name}: refused with ${vec.expect}`, async () => {
    const reader = all.get(vec.reader)!;
    await assert.rejects(
      openEnvelope(vec.envelope, { keyring: ringOf(reader), channelCid: vec.channel_cid, senderKey: lookup(keys) }),
      (err: unknown) => err instanceof EnvelopeError && err.code === vec.expect,
    );
  });
}

test("records in the vectors verify and rebuild byte for byte", () => {
  for (const pair of all.values()) {
    const verified = verifyRecord(pair.record);
    assert.equal(verified.record["enc_pub"], pair.encPub);
    assert.equal(verified.record["sig_pub"], pair.sigPub);
  }
});
