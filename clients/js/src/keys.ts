// Device keys, the key directory's record (API.md "Keys"), fingerprints and the keyring: the same
// records, signed bytes and JSON forms as clients/python/safeharbor_client/keys.py.
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { b64urlDecode, b64urlEncode, buf, equalBytes, jcs, randomBytes, toHex } from "./encoding.js";
import { KeyNotExtractable, KeyRecordInvalid, KeysNotInitialized } from "./errors.js";
import { type HybridPrivateKey, type HybridPublicKey, HYBRID_PUBLIC_SIZE, hybridPublicBytes, hybridPublicKey } from "./hpke.js";

export const SIGNED_FIELDS = ["user_id", "device_id", "version", "enc_pub", "sig_pub", "created_at", "prev_hash"] as const;
export const PQ_KEY_PURPOSE = "safeharbor/pq-key/v1";

export type KeyRecord = Record<string, unknown>;

/** One version of one device key of one user: what an envelope names as sender or recipient. */
export interface DeviceRef {
  readonly userId: string;
  readonly deviceId: string;
  readonly version: number;
}

export function refKey(ref: DeviceRef): string {
  return JSON.stringify([ref.userId, ref.deviceId, ref.version]);
}

export function refList(ref: DeviceRef): [string, string, number] {
  return [ref.userId, ref.deviceId, ref.version];
}

/** Python's DeviceRef order (user, device, version): how `rcp` is sorted. Strings compare by code point. */
export function compareRefs(a: DeviceRef, b: DeviceRef): number {
  return cmp(a.userId, b.userId) || cmp(a.deviceId, b.deviceId) || a.version - b.version;
}

function cmp(a: string, b: string): number {
  const x = Array.from(a, (c) => c.codePointAt(0)!);
  const y = Array.from(b, (c) => c.codePointAt(0)!);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

/** RFC 3339 UTC with microseconds, like Python's format_time: versions made within a second still order. */
export function formatTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/** RFC 3339 (Z or an offset) to Unix milliseconds. */
export function parseTime(text: unknown): number {
  if (typeof text !== "string" || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|z|[+-]\d\d:\d\d)?$/.test(text)) {
    throw new RangeError(`not an RFC 3339 time: ${String(text)}`);
  }
  const withZone = /(Z|z|[+-]\d\d:\d\d)$/.test(text) ? text : `${text}Z`;
  const ms = Date.parse(withZone.replace(/(\.\d{3})\d+/, "$1"));
  if (Number.isNaN(ms)) throw new RangeError(`not an RFC 3339 time: ${text}`);
  return ms;
}

/** The X25519 and Ed25519 private keys of a pair as non-extractable WebCrypto keys: usable (decap, sign),
 *  never readable as bytes. The X25519 public key rides along because HPKE's decap needs pk(skR). */
export interface HeldKeys {
  readonly enc: CryptoKeyPair;
  readonly sig: CryptoKey;
}

/** The private keys of one device key version: raw bytes (as the Python keyring keeps them, and as a
 *  backup carries them), or, after `toHeld()`, non-extractable WebCrypto keys for X25519 and Ed25519. The
 *  ML-KEM-768 hybrid part stays bytes either way: WebCrypto has no ML-KEM. */
export class DeviceKeyPair {
  record: KeyRecord | null;
  private readonly publicKeys: { enc: string; sig: string } | null;

  constructor(
    readonly userId: string,
    readonly deviceId: string,
    readonly version: number,
    readonly createdAt: string,
    private readonly encBytes: Uint8Array | null,
    private readonly sigBytes: Uint8Array | null,
    readonly pq: HybridPrivateKey | null = null,
    record: KeyRecord | null = null,
    readonly held: HeldKeys | null = null,
    publicKeys: { enc: string; sig: string } | null = null,
  ) {
    if ((encBytes === null || sigBytes === null) && (held === null || publicKeys === null)) {
      throw new KeysNotInitialized("a device key pair needs its private key bytes or held keys with their public keys");
    }
    this.record = record;
    this.publicKeys = publicKeys;
  }

  static generate(o: { userId: string; deviceId: string; version: number; withPq?: boolean; createdAt?: string }): DeviceKeyPair {
    const pq: HybridPrivateKey | null = o.withPq
      ? { kind: "mlkem768x25519-private", mlkemSeed: randomBytes(64), x25519Private: randomBytes(32) }
      : null;
    return new DeviceKeyPair(o.userId, o.deviceId, o.version, o.createdAt ?? formatTime(Date.now()),
      randomBytes(32), randomBytes(32), pq);
  }

  /** A pair whose X25519 and Ed25519 private keys are WebCrypto keys (e.g. read back from IndexedDB). */
  static fromHeld(o: {
    userId: string; deviceId: string; version: number; createdAt: string; held: HeldKeys; encPub: string; sigPub: string;
    pq?: HybridPrivateKey | null; record?: KeyRecord | null;
  }): DeviceKeyPair {
    return new DeviceKeyPair(o.userId, o.deviceId, o.version, o.createdAt, null, null, o.pq ?? null, o.record ?? null, o.held,
      { enc: o.encPub, sig: o.sigPub });
  }

  get ref(): DeviceRef {
    return { userId: this.userId, deviceId: this.deviceId, version: this.version };
  }

  /** False once the X25519 and Ed25519 keys are held as non-extractable WebCrypto keys. */
  get extractable(): boolean {
    return this.encBytes !== null && this.sigBytes !== null;
  }

  get encPrivate(): Uint8Array {
    if (this.encBytes === null) throw new KeyNotExtractable("this X25519 key is a non-extractable WebCrypto key");
    return this.encBytes;
  }

  get sigPrivate(): Uint8Array {
    if (this.sigBytes === null) throw new KeyNotExtractable("this Ed25519 key is a non-extractable WebCrypto key");
    return this.sigBytes;
  }

  get encPub(): string {
    return this.publicKeys?.enc ?? b64urlEncode(x25519.getPublicKey(this.encPrivate));
  }

  get sigPub(): string {
    return this.publicKeys?.sig ?? b64urlEncode(ed25519.getPublicKey(this.sigPrivate));
  }

  /** Ed25519 over `message` with the key bytes (Ed25519 is deterministic: the same bytes as `signAsync`). */
  sign(message: Uint8Array): Uint8Array {
    return ed25519.sign(message, this.sigPrivate);
  }

  /** Ed25519 with whichever form the key has: WebCrypto for a held key, the bytes otherwise. */
  async signAsync(message: Uint8Array): Promise<Uint8Array> {
    if (!this.held) return this.sign(message);
    return new Uint8Array(await crypto.subtle.sign("Ed25519", this.held.sig, buf(message)));
  }

  /** The same pair with its X25519 and Ed25519 private keys imported into WebCrypto non-extractable. */
  async toHeld(): Promise<DeviceKeyPair> {
    if (this.held) return this;
    const encPub = this.encPub;
    const sigPub = this.sigPub;
    const jwk = (crv: string, d: Uint8Array, x: string): JsonWebKey => ({ kty: "OKP", crv, d: b64urlEncode(d), x });
    const sig = await crypto.subtle.importKey("jwk", jwk("Ed25519", this.sigPrivate, sigPub), { name: "Ed25519" }, false, ["sign"]);
    const encPrivate = await crypto.subtle.importKey("jwk", jwk("X25519", this.encPrivate, encPub), { name: "X25519" }, false, ["deriveBits"]);
    const encPublic = await crypto.subtle.importKey("raw", buf(b64urlDecode(encPub)), { name: "X25519" }, true, []);
    return DeviceKeyPair.fromHeld({
      userId: this.userId, deviceId: this.deviceId, version: this.version, createdAt: this.createdAt,
      held: { enc: { privateKey: encPrivate, publicKey: encPublic }, sig }, encPub, sigPub, pq: this.pq, record: this.record,
    });
  }

  /** The keyring JSON form of one pair (Python's `to_private_json`). */
  toPrivateJson(): Record<string, unknown> {
    if (!this.extractable) throw new KeyNotExtractable("a held (non-extractable) key has no private JSON form");
    const out: Record<string, unknown> = {
      user_id: this.userId,
      device_id: this.deviceId,
      version: this.version,
      created_at: this.createdAt,
      enc_private: b64urlEncode(this.encPrivate),
      sig_private: b64urlEncode(this.sigPrivate),
    };
    if (this.pq) {
      out["pq_mlkem_seed"] = b64urlEncode(this.pq.mlkemSeed);
      out["pq_x25519_private"] = b64urlEncode(this.pq.x25519Private);
    }
    if (this.record) out["record"] = this.record;
    return out;
  }

  static fromPrivateJson(data: Record<string, unknown>): DeviceKeyPair {
    try {
      const pq: HybridPrivateKey | null = data["pq_mlkem_seed"]
        ? {
            kind: "mlkem768x25519-private",
            mlkemSeed: sized(b64urlDecode(data["pq_mlkem_seed"] as string), 64),
            x25519Private: sized(b64urlDecode(data["pq_x25519_private"] as string), 32),
          }
        : null;
      const version = data["version"];
      if (typeof version !== "number" || !Number.isInteger(version)) throw new TypeError("version");
      return new DeviceKeyPair(
        String(data["user_id"]),
        String(data["device_id"]),
        version,
        String(data["created_at"]),
        sized(b64urlDecode(data["enc_private"] as string), 32),
        sized(b64urlDecode(data["sig_private"] as string), 32),
        pq,
        data["record"] ? { ...(data["record"] as KeyRecord) } : null,
      );
    } catch (cause) {
      throw new KeysNotInitialized("stored device key is unreadable", { cause });
    }
  }
}

function sized(bytes: Uint8Array, n: number): Uint8Array {
  if (bytes.length !== n) throw new RangeError(`expected ${n} bytes`);
  return bytes;
}

// -- key records --------------------------------------------------------------------------------

export function signedBytes(record: KeyRecord): Uint8Array {
  const picked: Record<string, unknown> = {};
  for (const name of SIGNED_FIELDS) {
    if (!(name in record)) throw new KeyRecordInvalid(`key record lacks ${name}`);
    picked[name] = record[name];
  }
  return jcs(picked);
}

/** `prev_hash` of the next version: base64url SHA-256 of this record's signed bytes. */
export function recordHash(record: KeyRecord): string {
  return b64urlEncode(sha256(signedBytes(record)));
}

export function pqSignedBytes(record: KeyRecord): Uint8Array {
  return jcs({
    purpose: PQ_KEY_PURPOSE,
    user_id: record["user_id"],
    device_id: record["device_id"],
    version: record["version"],
    pq_pub: record["pq_pub"],
  });
}

/** The record to POST /v1/keys for `pair`; `previous` (same device, version - 1) signs the rotation. */
export function buildRecord(pair: DeviceKeyPair, previous?: DeviceKeyPair): KeyRecord {
  if (previous) {
    if (!previous.record) throw new KeysNotInitialized("the previous key version was never registered");
    if (previous.userId !== pair.userId || previous.deviceId !== pair.deviceId || previous.version + 1 !== pair.version) {
      throw new KeyRecordInvalid("a rotation follows the previous version of the same device");
    }
  } else if (pair.version !== 1) {
    throw new KeyRecordInvalid("a first key version is version 1");
  }
  const record: KeyRecord = {
    user_id: pair.userId,
    device_id: pair.deviceId,
    version: pair.version,
    enc_pub: pair.encPub,
    sig_pub: pair.sigPub,
    created_at: pair.createdAt,
    prev_hash: previous?.record ? recordHash(previous.record) : "",
  };
  const message = signedBytes(record);
  record["signature"] = b64urlEncode(pair.sign(message));
  if (previous) record["rotation_signature"] = b64urlEncode(previous.sign(message));
  if (pair.pq) {
    record["pq_pub"] = b64urlEncode(hybridPublicBytes(pair.pq));
    record["pq_signature"] = b64urlEncode(pair.sign(pqSignedBytes(record)));
  }
  return record;
}

/** A key record whose self-signature (and PQ extension, when present) verified. */
export interface VerifiedKey {
  readonly ref: DeviceRef;
  readonly encPub: Uint8Array;
  readonly sigPub: Uint8Array;
  readonly pqPub: HybridPublicKey | null;
  readonly createdAt: number; // Unix ms
  readonly record: KeyRecord;
  readonly revokedAt: number | null;
  readonly fingerprint: string;
}

function decodeField(record: KeyRecord, name: string, size: number): Uint8Array {
  const value = record[name];
  let raw: Uint8Array = new Uint8Array(0);
  try {
    if (typeof value === "string") raw = b64urlDecode(value);
  } catch {
    raw = new Uint8Array(0);
  }
  if (raw.length !== size) throw new KeyRecordInvalid(`key record field ${name} is not a ${size}-byte base64url value`);
  return raw;
}

function verifySig(pub: Uint8Array, field: string, record: KeyRecord, message: Uint8Array): void {
  const signature = decodeField(record, field, 64);
  let ok = false;
  try {
    ok = ed25519.verify(signature, message, pub);
  } catch {
    ok = false;
  }
  if (!ok) throw new KeyRecordInvalid(`key record ${field} does not verify`);
}

/** Self-signature, PQ extension and, given the previous version, the chain link (Python's verify_record). */
export function verifyRecord(
  record: unknown,
  o: { userId?: string; previous?: KeyRecord; revokedAt?: string | null } = {},
): VerifiedKey {
  if (typeof record !== "object" || record === null || Array.isArray(record)) throw new KeyRecordInvalid("key record is not an object");
  const r = record as KeyRecord;
  for (const name of ["user_id", "device_id", "created_at", "prev_hash"]) {
    if (typeof r[name] !== "string") throw new KeyRecordInvalid(`key record field ${name} is missing or not a string`);
  }
  const version = r["version"];
  if (typeof version !== "number" || !Number.isInteger(version) || version < 1) {
    throw new KeyRecordInvalid("key record version is not a positive integer");
  }
  if (o.userId !== undefined && r["user_id"] !== o.userId) throw new KeyRecordInvalid("key record names another user than the one asked for");
  const sigPub = decodeField(r, "sig_pub", 32);
  const encPub = decodeField(r, "enc_pub", 32);
  const message = signedBytes(r);
  verifySig(sigPub, "signature", r, message);
  if (o.previous) {
    const p = o.previous;
    if (p["user_id"] !== r["user_id"] || p["device_id"] !== r["device_id"] || p["version"] !== version - 1) {
      throw new KeyRecordInvalid("key record does not follow the given previous version");
    }
    if (r["prev_hash"] !== recordHash(p)) throw new KeyRecordInvalid("key record prev_hash does not match the previous version");
    verifySig(decodeField(p, "sig_pub", 32), "rotation_signature", r, message);
  } else if (version === 1 && r["prev_hash"] !== "") {
    throw new KeyRecordInvalid("a version 1 key record has an empty prev_hash");
  }
  let pqPub: HybridPublicKey | null = null;
  if (r["pq_pub"] !== undefined && r["pq_pub"] !== null) {
    const raw = decodeField(r, "pq_pub", HYBRID_PUBLIC_SIZE);
    verifySig(sigPub, "pq_signature", r, pqSignedBytes(r));
    pqPub = hybridPublicKey(raw);
  }
  let createdAt: number;
  let revokedAt: number | null;
  try {
    createdAt = parseTime(r["created_at"]);
    revokedAt = o.revokedAt ? parseTime(o.revokedAt) : null;
  } catch (cause) {
    throw new KeyRecordInvalid("key record time is not RFC 3339", { cause });
  }
  return {
    ref: { userId: r["user_id"] as string, deviceId: r["device_id"] as string, version },
    encPub,
    sigPub,
    pqPub,
    createdAt,
    record: { ...r },
    revokedAt,
    fingerprint: fingerprint(r),
  };
}

/** 8 groups of 4 hex digits of SHA-256 over user, device and both public keys (compare out of band). */
export function fingerprint(record: KeyRecord): string {
  const material = jcs({
    purpose: "safeharbor/fingerprint/v1",
    user_id: record["user_id"] ?? null,
    device_id: record["device_id"] ?? null,
    enc_pub: record["enc_pub"] ?? null,
    sig_pub: record["sig_pub"] ?? null,
  });
  const digest = toHex(sha256(material)).slice(0, 32);
  return digest.match(/.{4}/g)!.join(" ");
}

// -- keyring ------------------------------------------------------------------------------------

/** Every private key version this client holds for its user, plus which device this one is. */
export class Keyring {
  readonly pairs = new Map<string, DeviceKeyPair>();

  constructor(readonly userId: string, public deviceId: string | null = null) {}

  add(pair: DeviceKeyPair): void {
    if (pair.userId !== this.userId) throw new KeyRecordInvalid("a keyring holds one user's keys");
    this.pairs.set(refKey(pair.ref), pair);
  }

  /** Add keys not held yet (e.g. from a backup); returns how many were new. */
  merge(pairs: Iterable<DeviceKeyPair>): number {
    let added = 0;
    for (const pair of pairs) {
      if (pair.userId !== this.userId) throw new KeyRecordInvalid("a keyring holds one user's keys");
      const existing = this.pairs.get(refKey(pair.ref));
      if (!existing) {
        this.pairs.set(refKey(pair.ref), pair);
        added++;
      } else if (!existing.record && pair.record) {
        existing.record = pair.record;
      }
    }
    return added;
  }

  get(ref: DeviceRef): DeviceKeyPair | undefined {
    return this.pairs.get(refKey(ref));
  }

  /** The newest version of this device's key. */
  current(): DeviceKeyPair {
    const mine = [...this.pairs.values()].filter((p) => p.deviceId === this.deviceId);
    if (this.deviceId === null || mine.length === 0) throw new KeysNotInitialized("this device has no keys yet");
    return mine.reduce((a, b) => (b.version > a.version ? b : a));
  }

  get maxVersion(): number {
    return Math.max(0, ...[...this.pairs.values()].map((p) => p.version));
  }

  toJson(): Record<string, unknown> {
    const keys = [...this.pairs.values()].sort((a, b) => compareRefs(a.ref, b.ref)).map((p) => p.toPrivateJson());
    return { user_id: this.userId, device_id: this.deviceId, keys };
  }

  static fromJson(data: Record<string, unknown>): Keyring {
    if (typeof data["user_id"] !== "string") throw new KeysNotInitialized("stored keyring is unreadable");
    const ring = new Keyring(data["user_id"], typeof data["device_id"] === "string" ? data["device_id"] : null);
    for (const item of (data["keys"] as Record<string, unknown>[] | undefined) ?? []) ring.add(DeviceKeyPair.fromPrivateJson(item));
    return ring;
  }
}

export function sameKey(pair: DeviceKeyPair, record: KeyRecord): boolean {
  return pair.sigPub === record["sig_pub"] && pair.encPub === record["enc_pub"];
}

export { equalBytes };
