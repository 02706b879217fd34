// The end-to-end envelope, version 1 (clients/python/ENVELOPE.md): encrypt once with AES-256-GCM, wrap
// the content key per device with HPKE, sign everything with Ed25519. Opening checks run in the
// document's order and each failure has its own error class, with the Python SDK's codes.
import { ed25519 } from "@noble/curves/ed25519.js";
import { b64urlDecode, b64urlEncode, buf, concat, fromUtf8, jcs, jcsText, randomBytes, utf8 } from "./encoding.js";
import {
  EnvelopeMalformed,
  EnvelopeTampered,
  EnvelopeTooLarge,
  MisaddressedMessage,
  NotARecipient,
  ReplayDetected,
  SenderMismatch,
  SignatureInvalid,
  SignatureMissing,
  UnsupportedEnvelope,
} from "./errors.js";
import { type HybridPublicKey, openHybrid, openX25519, sealHybrid, sealX25519 } from "./hpke.js";
import { compareRefs, type DeviceKeyPair, type DeviceRef, type Keyring, refKey, refList, type VerifiedKey } from "./keys.js";

export const ENVELOPE_VERSION = 1;
export const SUITE_X25519 = "x25519";
export const SUITE_PQ = "mlkem768x25519";
export type Suite = typeof SUITE_X25519 | typeof SUITE_PQ;
const CONTENT_KEY_SIZE = 32;
const NONCE_SIZE = 12;
const TAG_SIZE = 16;
const WRAPPED_SIZE: Record<Suite, number> = { x25519: 32 + 48, mlkem768x25519: 1120 + 48 };
const PAD_BLOCK = 32;
export const DOMAIN_WRAP = utf8("safeharbor/e2ee/v1/wrap\0");
export const DOMAIN_CONTENT = utf8("safeharbor/e2ee/v1/content\0");
export const DOMAIN_SIGNATURE = utf8("safeharbor/e2ee/v1/signature\0");
/** Stream's default `max_message_length`; the envelope is the message text. */
export const DEFAULT_MAX_ENVELOPE_CHARS = 5000;
const MAX_PARSE_CHARS = 1 << 20;
const MAX_RECIPIENTS = 1000;
export const DEFAULT_FRESHNESS_MS = 600_000;
const FIELDS = new Set(["v", "s", "snd", "cid", "mid", "ts", "rcp", "ek", "n", "ct", "sig"]);
const MID = /^[A-Za-z0-9_-]{8,64}$/;

export interface Recipient {
  readonly ref: DeviceRef;
  readonly encPub: Uint8Array;
  readonly pqPub: HybridPublicKey | null;
}

export function recipientFromKey(key: VerifiedKey): Recipient {
  return { ref: key.ref, encPub: key.encPub, pqPub: key.pqPub };
}

export class Envelope {
  constructor(
    readonly version: number,
    readonly suite: Suite,
    readonly sender: DeviceRef,
    readonly cid: string,
    readonly mid: string,
    readonly tsMs: number,
    readonly recipients: readonly DeviceRef[],
    readonly wrapped: readonly Uint8Array[],
    readonly nonce: Uint8Array,
    readonly ciphertext: Uint8Array,
    readonly signature: Uint8Array | null,
  ) {}

  wrapInfo(): Uint8Array {
    return wrapInfo(this.version, this.suite, this.sender, this.cid, this.mid);
  }

  headerJson(): Record<string, unknown> {
    return {
      v: this.version,
      s: this.suite,
      snd: refList(this.sender),
      cid: this.cid,
      mid: this.mid,
      ts: this.tsMs,
      rcp: this.recipients.map(refList),
    };
  }

  contentAad(): Uint8Array {
    return concat(DOMAIN_CONTENT, jcs({ ...this.headerJson(), ek: this.wrapped.map(b64urlEncode) }));
  }

  unsignedJson(): Record<string, unknown> {
    return {
      ...this.headerJson(),
      ek: this.wrapped.map(b64urlEncode),
      n: b64urlEncode(this.nonce),
      ct: b64urlEncode(this.ciphertext),
    };
  }

  signedBytes(): Uint8Array {
    return concat(DOMAIN_SIGNATURE, jcs(this.unsignedJson()));
  }

  toJson(): Record<string, unknown> {
    const out = this.unsignedJson();
    if (this.signature) out["sig"] = b64urlEncode(this.signature);
    return out;
  }

  /** The wire form: the canonical JSON of the whole object. */
  toText(): string {
    return jcsText(this.toJson());
  }

  with(changes: { ciphertext?: Uint8Array; signature?: Uint8Array }): Envelope {
    return new Envelope(this.version, this.suite, this.sender, this.cid, this.mid, this.tsMs, this.recipients,
      this.wrapped, this.nonce, changes.ciphertext ?? this.ciphertext, changes.signature ?? this.signature);
  }

  /** Structure only (no keys needed): EnvelopeMalformed, UnsupportedEnvelope, SignatureMissing. */
  static parse(text: string | Record<string, unknown>): Envelope {
    let data: unknown = text;
    if (typeof text === "string") {
      if (text.length > MAX_PARSE_CHARS) throw new EnvelopeMalformed("envelope is too large to be one");
      try {
        data = JSON.parse(text);
      } catch (cause) {
        throw new EnvelopeMalformed("not an envelope: the message is not JSON", { cause });
      }
    }
    if (typeof data !== "object" || data === null || Array.isArray(data)) throw new EnvelopeMalformed("not an envelope: not a JSON object");
    const d = data as Record<string, unknown>;
    const version = d["v"];
    if (!isInt(version)) throw new EnvelopeMalformed("not an envelope: no version");
    if (version !== ENVELOPE_VERSION) throw new UnsupportedEnvelope(`envelope version ${version} is not supported`);
    const unknown = Object.keys(d).filter((k) => !FIELDS.has(k)).sort();
    if (unknown.length) throw new EnvelopeMalformed(`envelope has unknown field ${unknown[0]}`);
    const suite = d["s"];
    if (suite !== SUITE_X25519 && suite !== SUITE_PQ) throw new UnsupportedEnvelope("envelope suite is not supported");
    const mid = d["mid"];
    if (typeof mid !== "string" || !MID.test(mid)) throw new EnvelopeMalformed("envelope mid is missing or malformed");
    const m = { messageId: mid };
    const sender = deviceRef(d["snd"], "snd", mid);
    const cid = d["cid"];
    if (typeof cid !== "string" || !cid || cid.length > 300) throw new EnvelopeMalformed("envelope cid is missing or malformed", m);
    const ts = d["ts"];
    if (!isInt(ts) || ts < 0) throw new EnvelopeMalformed("envelope ts is missing or malformed", m);
    const rcpRaw = d["rcp"];
    if (!Array.isArray(rcpRaw) || !rcpRaw.length || rcpRaw.length > MAX_RECIPIENTS) {
      throw new EnvelopeMalformed("envelope rcp is missing or malformed", m);
    }
    const recipients = rcpRaw.map((item) => deviceRef(item, "rcp", mid));
    if (new Set(recipients.map(refKey)).size !== recipients.length) throw new EnvelopeMalformed("envelope rcp lists a device twice", m);
    const ekRaw = d["ek"];
    if (!Array.isArray(ekRaw) || ekRaw.length !== recipients.length) throw new EnvelopeMalformed("envelope ek does not match rcp", m);
    const wrapped = ekRaw.map((item) => b64(item, "ek", mid, WRAPPED_SIZE[suite]));
    const nonce = b64(d["n"], "n", mid, NONCE_SIZE);
    const ciphertext = b64(d["ct"], "ct", mid);
    if (ciphertext.length < TAG_SIZE + PAD_BLOCK) throw new EnvelopeMalformed("envelope ct is too short", m);
    if (!("sig" in d) || d["sig"] === null || d["sig"] === "") throw new SignatureMissing("envelope is not signed", m);
    let signature: Uint8Array = new Uint8Array(0);
    try {
      if (typeof d["sig"] === "string") signature = b64urlDecode(d["sig"]);
    } catch {
      signature = new Uint8Array(0);
    }
    if (signature.length !== 64) throw new SignatureInvalid("envelope signature is not a 64-byte Ed25519 signature", m);
    return new Envelope(version, suite, sender, cid, mid, ts, recipients, wrapped, nonce, ciphertext, signature);
  }
}

function isInt(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value);
}

function deviceRef(value: unknown, name: string, mid: string): DeviceRef {
  if (!Array.isArray(value) || value.length !== 3 || typeof value[0] !== "string" || !value[0] ||
      typeof value[1] !== "string" || !value[1] || !isInt(value[2]) || value[2] < 1) {
    throw new EnvelopeMalformed(`envelope ${name} entry is not [user, device, version]`, { messageId: mid });
  }
  return { userId: value[0], deviceId: value[1], version: value[2] };
}

function b64(value: unknown, name: string, mid: string, size?: number): Uint8Array {
  let raw: Uint8Array | null = null;
  try {
    if (typeof value === "string") raw = b64urlDecode(value);
  } catch {
    raw = null;
  }
  if (raw === null || (size !== undefined && raw.length !== size)) {
    throw new EnvelopeMalformed(`envelope ${name} is not valid base64url of the right length`, { messageId: mid });
  }
  return raw;
}

export function wrapInfo(version: number, suite: string, sender: DeviceRef, cid: string, mid: string): Uint8Array {
  return concat(DOMAIN_WRAP, jcs({ v: version, s: suite, snd: refList(sender), cid, mid }));
}

/** ISO/IEC 7816-4 padding to a multiple of 32 bytes: hides the exact message length. */
export function pad(payload: Uint8Array): Uint8Array {
  const len = payload.length + 1;
  const out = new Uint8Array(len + ((PAD_BLOCK - (len % PAD_BLOCK)) % PAD_BLOCK));
  out.set(payload);
  out[payload.length] = 0x80;
  return out;
}

export function unpad(padded: Uint8Array): Uint8Array {
  let end = padded.length;
  while (end > 0 && padded[end - 1] === 0) end--;
  if (end === 0 || padded[end - 1] !== 0x80 || padded.length % PAD_BLOCK) throw new RangeError("bad padding");
  return padded.subarray(0, end - 1);
}

export function newMessageId(): string {
  return b64urlEncode(randomBytes(16));
}

/** The hybrid post-quantum suite when every recipient device published a hybrid key, else X25519. */
export function chooseSuite(recipients: readonly Recipient[], allowPq = true): Suite {
  return allowPq && recipients.length > 0 && recipients.every((r) => r.pqPub) ? SUITE_PQ : SUITE_X25519;
}

async function aesGcm(op: "encrypt" | "decrypt", key: Uint8Array, iv: Uint8Array, data: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey("raw", buf(key), "AES-GCM", false, [op]);
  const params = { name: "AES-GCM", iv: buf(iv), additionalData: buf(aad) };
  return new Uint8Array(await crypto.subtle[op](params, k, buf(data)));
}

export interface SealOptions {
  text: string;
  sender: DeviceKeyPair;
  recipients: readonly Recipient[];
  channelCid: string;
  suite?: Suite;
  allowPq?: boolean;
  messageId?: string;
  timestampMs?: number;
  maxChars?: number;
  /** For test vectors only. */
  contentKey?: Uint8Array;
  /** For test vectors only. */
  nonce?: Uint8Array;
}

/** Encrypt `text` once for every recipient device (the sender's own included) and sign it. */
export async function seal(o: SealOptions): Promise<Envelope> {
  if (!o.recipients.length) throw new EnvelopeMalformed("an envelope needs at least one recipient device");
  const byRef = new Map<string, Recipient>();
  for (const r of o.recipients) byRef.set(refKey(r.ref), r);
  const ordered = [...byRef.values()].sort((a, b) => compareRefs(a.ref, b.ref));
  const suite = o.suite ?? chooseSuite(ordered, o.allowPq ?? true);
  if (suite !== SUITE_X25519 && suite !== SUITE_PQ) throw new UnsupportedEnvelope("unknown suite");
  if (suite === SUITE_PQ && ordered.some((r) => !r.pqPub)) {
    throw new UnsupportedEnvelope("the post-quantum suite needs a hybrid key for every recipient device");
  }
  if (ordered.length > MAX_RECIPIENTS) throw new EnvelopeTooLarge("too many recipient devices");
  const mid = o.messageId ?? newMessageId();
  const ts = o.timestampMs ?? Date.now();
  const key = o.contentKey ?? randomBytes(CONTENT_KEY_SIZE);
  const iv = o.nonce ?? randomBytes(NONCE_SIZE);
  const info = wrapInfo(ENVELOPE_VERSION, suite, o.sender.ref, o.channelCid, mid);
  const wrapped = await Promise.all(
    ordered.map((r) => (suite === SUITE_PQ ? sealHybrid(r.pqPub!, info, key) : sealX25519(r.encPub, info, key))),
  );
  const unsigned = new Envelope(ENVELOPE_VERSION, suite, o.sender.ref, o.channelCid, mid, ts, ordered.map((r) => r.ref),
    wrapped, iv, new Uint8Array(0), null);
  const payload = pad(jcs({ text: o.text }));
  const withCt = unsigned.with({ ciphertext: await aesGcm("encrypt", key, iv, payload, unsigned.contentAad()) });
  const signed = withCt.with({ signature: await o.sender.signAsync(withCt.signedBytes()) });
  const size = signed.toText().length;
  const max = o.maxChars ?? DEFAULT_MAX_ENVELOPE_CHARS;
  if (size > max) {
    throw new EnvelopeTooLarge(`the envelope is ${size} characters for ${ordered.length} device(s), above the ${max} limit`);
  }
  return signed;
}

// -- opening ------------------------------------------------------------------------------------

/** The sender's verified key valid at the message time; throws SenderKeyNotValid when there is none. */
export type SenderKeyLookup = (ref: DeviceRef, atMs: number) => VerifiedKey | Promise<VerifiedKey>;

export interface SeenStore {
  /** Remember `mid` as read from transport message `transportId`; return the first transport id if it differs. */
  remember(o: { cid: string; mid: string; transportId: string; tsMs: number }): Promise<string | null> | string | null;
}

export interface OpenedMessage {
  text: string;
  sender: DeviceRef;
  senderFingerprint: string;
  channelCid: string;
  messageId: string;
  timestampMs: number;
  suite: Suite;
  recipients: readonly DeviceRef[];
}

function ownSlot(envelope: Envelope, keyring: Keyring): [number, DeviceKeyPair] {
  const held: [number, DeviceKeyPair][] = [];
  envelope.recipients.forEach((ref, i) => {
    const pair = keyring.get(ref);
    if (pair) held.push([i, pair]);
  });
  if (!held.length) throw new NotARecipient("none of this user's device keys is a recipient of the message", { messageId: envelope.mid });
  held.sort((a, b) => Number(a[1].deviceId !== keyring.deviceId) - Number(b[1].deviceId !== keyring.deviceId) || b[1].version - a[1].version);
  return held[0]!;
}

/** Unwrap the content key and open the content: the padded payload, not yet signature-checked. */
export async function decryptContent(envelope: Envelope, keyring: Keyring): Promise<Uint8Array> {
  const [index, pair] = ownSlot(envelope, keyring);
  const m = { messageId: envelope.mid };
  if (envelope.suite === SUITE_PQ && !pair.pq) {
    throw new NotARecipient("the envelope uses the post-quantum suite but this key has no hybrid part", m);
  }
  let contentKey: Uint8Array;
  try {
    contentKey = envelope.suite === SUITE_PQ
      ? await openHybrid(pair.pq!, envelope.wrapInfo(), envelope.wrapped[index]!)
      : await openX25519(pair.held?.enc ?? pair.encPrivate, envelope.wrapInfo(), envelope.wrapped[index]!);
  } catch (cause) {
    throw new EnvelopeTampered("the wrapped content key does not open", { ...m, cause });
  }
  if (contentKey.length !== CONTENT_KEY_SIZE) throw new EnvelopeTampered("the wrapped content key has a wrong size", m);
  try {
    return await aesGcm("decrypt", contentKey, envelope.nonce, envelope.ciphertext, envelope.contentAad());
  } catch (cause) {
    throw new EnvelopeTampered("the message content or header was changed", { ...m, cause });
  }
}

export function verifySignature(envelope: Envelope, key: VerifiedKey): void {
  const m = { messageId: envelope.mid };
  if (!envelope.signature) throw new SignatureMissing("envelope is not signed", m);
  if (refKey(key.ref) !== refKey(envelope.sender)) throw new SignatureInvalid("the key given is not the sender key the envelope names", m);
  let ok = false;
  try {
    ok = ed25519.verify(envelope.signature, envelope.signedBytes(), key.sigPub);
  } catch {
    ok = false;
  }
  if (!ok) throw new SignatureInvalid("the sender signature does not verify", m);
}

export interface OpenOptions {
  keyring: Keyring;
  channelCid: string;
  senderKey: SenderKeyLookup;
  streamUserId?: string;
  streamMessageId?: string;
  streamCreatedAtMs?: number;
  seen?: SeenStore;
  freshnessMs?: number;
}

/** Decrypt and verify one envelope read from channel `channelCid` (checks in ENVELOPE.md's order). */
export async function openEnvelope(text: string | Envelope, o: OpenOptions): Promise<OpenedMessage> {
  const envelope = typeof text === "string" ? Envelope.parse(text) : text;
  const m = { messageId: envelope.mid };
  const padded = await decryptContent(envelope, o.keyring);
  const key = await o.senderKey(envelope.sender, envelope.tsMs);
  verifySignature(envelope, key);
  if (envelope.cid !== o.channelCid) {
    throw new MisaddressedMessage("the message was sealed for another channel than the one it was read from", m);
  }
  if (o.streamUserId !== undefined && o.streamUserId !== envelope.sender.userId) {
    throw new SenderMismatch("the message was posted by another user than the one who signed it", m);
  }
  if (o.streamMessageId !== undefined && o.streamMessageId !== envelope.mid) {
    throw new ReplayDetected("the message was re-posted under another message id", m);
  }
  if (o.streamCreatedAtMs !== undefined && Math.abs(o.streamCreatedAtMs - envelope.tsMs) > (o.freshnessMs ?? DEFAULT_FRESHNESS_MS)) {
    throw new ReplayDetected("the message time is outside the freshness window", m);
  }
  if (o.seen) {
    const first = await o.seen.remember({ cid: envelope.cid, mid: envelope.mid, transportId: o.streamMessageId ?? envelope.mid, tsMs: envelope.tsMs });
    if (first !== null) throw new ReplayDetected("the message id was seen before in another message", m);
  }
  let messageText: unknown;
  try {
    messageText = (JSON.parse(fromUtf8(unpad(padded))) as Record<string, unknown>)["text"];
  } catch (cause) {
    throw new EnvelopeMalformed("the decrypted payload is malformed", { ...m, cause });
  }
  if (typeof messageText !== "string") throw new EnvelopeMalformed("the decrypted payload is malformed", m);
  return {
    text: messageText,
    sender: envelope.sender,
    senderFingerprint: key.fingerprint,
    channelCid: envelope.cid,
    messageId: envelope.mid,
    timestampMs: envelope.tsMs,
    suite: envelope.suite,
    recipients: envelope.recipients,
  };
}
