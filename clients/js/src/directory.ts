// Verifying what the key directory says (clients/python/safeharbor_client/directory.py): a checkpoint
// signed by the pinned key, consistent with the one remembered (RFC 6962 proofs, else the log forked),
// every record's inclusion proof, self-signature and version chain; revocations signed by the log key.
import { ed25519 } from "@noble/curves/ed25519.js";
import { b64Decode, b64Encode, b64urlDecode, fromHex, jcs } from "./encoding.js";
import { ApiErrorLike, DirectoryInconsistent, DirectoryProofInvalid, KeyRecordInvalid, SenderKeyNotValid } from "./errors.js";
import { type Checkpoint, NoteError, parseVerifierKey, verifyCheckpoint } from "./checkpoint.js";
import { type DeviceRef, type KeyRecord, parseTime, refKey, type VerifiedKey, verifyRecord } from "./keys.js";
import { leafHash, ProofVerificationError, verifyConsistency, verifyInclusion } from "./merkle.js";

/** Allowed clock difference between a device and the directory when checking key validity at a time. */
export const KEY_TIME_SKEW_MS = 5 * 60_000;

export interface DeviceEntry {
  readonly key: VerifiedKey;
  readonly leafIndex: number | null;
}

export interface UserKeys {
  readonly userId: string;
  readonly devices: readonly DeviceEntry[];
  readonly error: string | null;
}

export interface PublishedLeaf {
  readonly entry: DeviceEntry;
  readonly appendedAt: string | null;
  readonly revokedAt: number | null;
  readonly revocationReason: string | null;
}

/** What the client remembers between runs (the web app keeps it in IndexedDB, the CLI in a file). */
export interface DirectoryMemory {
  verifier_key?: string;
  checkpoint?: { origin: string; size: number; root: string; note: string };
}

export interface DirectoryVerifierOptions {
  memory: DirectoryMemory;
  save: (memory: DirectoryMemory) => void | Promise<void>;
  fetchVerifierKey: () => Promise<string>;
  fetchConsistency: (from: number, to: number) => Promise<readonly string[]>;
  pinnedKey?: string;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

export class DirectoryVerifier {
  readonly memory: DirectoryMemory;

  constructor(private readonly o: DirectoryVerifierOptions) {
    this.memory = o.memory;
  }

  private async pin(key: string): Promise<void> {
    try {
      parseVerifierKey(key);
    } catch (cause) {
      throw new DirectoryProofInvalid("the directory's checkpoint verifier key is malformed", { cause });
    }
    const pinned = this.memory.verifier_key;
    if (pinned && pinned !== key) throw new DirectoryInconsistent("the directory's checkpoint key differs from the pinned one");
    if (!pinned) {
      this.memory.verifier_key = key;
      await this.o.save(this.memory);
    }
  }

  async verifierKey(): Promise<string> {
    if (!this.memory.verifier_key) await this.pin((this.o.pinnedKey ?? (await this.o.fetchVerifierKey())).trim());
    return this.memory.verifier_key!;
  }

  get lastCheckpoint(): Checkpoint | null {
    const last = this.memory.checkpoint;
    return last ? { origin: last.origin, size: last.size, root: b64Decode(last.root), extensions: [] } : null;
  }

  /** Signature, then consistency with memory; remembers the checkpoint when it is newer. */
  async verifyCheckpoint(note: string): Promise<Checkpoint> {
    let checkpoint: Checkpoint;
    try {
      checkpoint = verifyCheckpoint(note, await this.verifierKey());
    } catch (cause) {
      if (!(cause instanceof NoteError)) throw cause;
      throw new DirectoryProofInvalid(`the directory checkpoint does not verify: ${cause.message}`, { cause });
    }
    const last = this.lastCheckpoint;
    if (!last) {
      await this.remember(checkpoint, note);
      return checkpoint;
    }
    if (checkpoint.origin !== last.origin) throw new DirectoryInconsistent("the directory checkpoint is for another log origin");
    if (checkpoint.size === last.size) {
      if (b64Encode(checkpoint.root) !== b64Encode(last.root)) {
        throw new DirectoryInconsistent(`the directory shows two different trees of size ${last.size} (a forked log)`);
      }
      return checkpoint;
    }
    const [older, newer] = checkpoint.size > last.size ? [last, checkpoint] : [checkpoint, last];
    let proof: Uint8Array[];
    try {
      proof = (await this.o.fetchConsistency(older.size, newer.size)).map(fromHex);
    } catch (cause) {
      throw new DirectoryInconsistent(
        `the directory cannot prove size ${older.size} and size ${newer.size} consistent (${codeOf(cause)}): a forked log`, { cause });
    }
    try {
      verifyConsistency(older.size, newer.size, proof, older.root, newer.root);
    } catch (cause) {
      throw new DirectoryInconsistent(
        `the directory log of size ${checkpoint.size} is not consistent with the checkpoint of size ${last.size} this client verified before (a forked log)`,
        { cause });
    }
    if (checkpoint.size > last.size) await this.remember(checkpoint, note);
    return checkpoint;
  }

  private async remember(checkpoint: Checkpoint, note: string): Promise<void> {
    this.memory.checkpoint = { origin: checkpoint.origin, size: checkpoint.size, root: b64Encode(checkpoint.root), note };
    await this.o.save(this.memory);
  }

  verifyInclusion(leaf: Json, leafIndex: unknown, proof: unknown, checkpoint: Checkpoint): void {
    if (typeof leafIndex !== "number" || !Number.isSafeInteger(leafIndex) || !Array.isArray(proof)) {
      throw new DirectoryProofInvalid("a key record comes without a usable inclusion proof");
    }
    try {
      verifyInclusion(leafHash(jcs(leaf)), leafIndex, checkpoint.size, proof.map((h) => fromHex(h as string)), checkpoint.root);
    } catch (cause) {
      if (!(cause instanceof ProofVerificationError || cause instanceof TypeError)) throw cause;
      throw new DirectoryProofInvalid(`key record at leaf ${leafIndex} is not in the directory's log: ${cause.message}`, { cause });
    }
  }

  verifyDevice(item: Json, userId: string, checkpoint: Checkpoint | null): DeviceEntry {
    const record = isObject(item["record"]) ? item["record"] : item;
    if (checkpoint) this.verifyInclusion(record, item["leaf_index"], item["inclusion_proof"], checkpoint);
    const revoked = typeof item["revoked_at"] === "string" ? item["revoked_at"] : null;
    const key = verifyRecord(record, { userId, revokedAt: revoked });
    const leafIndex = typeof item["leaf_index"] === "number" ? item["leaf_index"] : null;
    return { key, leafIndex };
  }

  /** A revocation leaf is signed by the log's own key (the checkpoint key). Returns its `revoked_at`. */
  async verifyRevocation(leaf: Json): Promise<number> {
    const publicKey = parseVerifierKey(await this.verifierKey()).publicKey;
    const body: Json = {};
    for (const [k, v] of Object.entries(leaf)) if (k !== "log_signature") body[k] = v;
    let ok = false;
    try {
      const sig = leaf["log_signature"];
      ok = typeof sig === "string" && ed25519.verify(b64urlDecode(sig), jcs(body), publicKey);
    } catch {
      ok = false;
    }
    if (!ok) throw new KeyRecordInvalid("a revocation leaf is not signed by the directory's log key");
    try {
      return parseTime(leaf["revoked_at"]);
    } catch (cause) {
      throw new KeyRecordInvalid("a revocation leaf has no valid revoked_at", { cause });
    }
  }

  /** One page of `GET /v1/keys/{user_id}/audit`. */
  async verifyUserAudit(body: Json, userId: string): Promise<PublishedLeaf[]> {
    const note = body["checkpoint"];
    const leaves = body["leaves"];
    if (typeof note !== "string" || !Array.isArray(leaves)) {
      throw new DirectoryProofInvalid("the key monitoring answer has no checkpoint or no leaves");
    }
    const checkpoint = await this.verifyCheckpoint(note);
    const out: PublishedLeaf[] = [];
    for (const item of leaves) {
      if (!isObject(item) || !isObject(item["record"])) throw new KeyRecordInvalid("a key monitoring entry has no record");
      const entry = this.verifyDevice(item, userId, checkpoint);
      const record = item["record"];
      const revocation = "revoked_at" in record;
      if (item["kind"] !== (revocation ? "revocation" : "key")) {
        throw new KeyRecordInvalid(`leaf ${entry.leafIndex} is labelled ${String(item["kind"])}`);
      }
      const appendedAt = typeof item["appended_at"] === "string" ? item["appended_at"] : null;
      if (revocation) {
        const reason = record["reason"];
        out.push({ entry, appendedAt, revokedAt: await this.verifyRevocation(record),
          revocationReason: reason === undefined || reason === null ? null : String(reason) });
      } else {
        out.push({ entry, appendedAt, revokedAt: null, revocationReason: null });
      }
    }
    return out;
  }

  /** A `GET /v1/keys?users=` answer: checkpoint, then every device of every user asked for. */
  async verifyLookup(body: Json, wanted: readonly string[]): Promise<Map<string, UserKeys>> {
    const note = body["checkpoint"];
    if (typeof note !== "string") throw new DirectoryProofInvalid("the key lookup answer has no checkpoint");
    const checkpoint = await this.verifyCheckpoint(note);
    const results = body["results"];
    if (!isObject(results)) throw new DirectoryProofInvalid("the key lookup answer has no results");
    const out = new Map<string, UserKeys>();
    for (const userId of wanted) {
      const entry = results[userId];
      if (!isObject(entry)) {
        out.set(userId, { userId, devices: [], error: "missing" });
        continue;
      }
      if ("error" in entry) {
        const error = entry["error"];
        const code = isObject(error) ? error["code"] : null;
        out.set(userId, { userId, devices: [], error: String(code ?? "error") });
        continue;
      }
      const devices = entry["devices"];
      if (!Array.isArray(devices)) throw new DirectoryProofInvalid("a key lookup result has no device list");
      const verified = devices.map((d) => this.verifyDevice(d as Json, userId, checkpoint));
      if (new Set(verified.map((d) => d.key.ref.deviceId)).size !== verified.length) {
        throw new KeyRecordInvalid("the directory returned two current versions of one device");
      }
      out.set(userId, { userId, devices: verified, error: null });
    }
    return out;
  }
}

function codeOf(error: unknown): string {
  return (error as ApiErrorLike)?.code ?? "error";
}

/** Every version of a device links to the one before (prev_hash and rotation signature). */
export function verifyChain(keys: readonly VerifiedKey[]): void {
  const byDevice = new Map<string, Map<number, VerifiedKey>>();
  for (const key of keys) {
    if (!byDevice.has(key.ref.deviceId)) byDevice.set(key.ref.deviceId, new Map());
    byDevice.get(key.ref.deviceId)!.set(key.ref.version, key);
  }
  for (const versions of byDevice.values()) {
    for (const [version, key] of versions) {
      const previous = versions.get(version - 1);
      if (previous) verifyRecord(key.record, { previous: previous.record });
      else if (version === 1) verifyRecord(key.record);
    }
  }
}

/** The key `ref` if it was the device's current, unrevoked key at `atMs` (clock skew allowed). */
export function keyValidAt(ref: DeviceRef, atMs: number, history: readonly VerifiedKey[]): VerifiedKey {
  const key = history.find((k) => refKey(k.ref) === refKey(ref));
  if (!key) throw new SenderKeyNotValid("the sender key the message names is not in the directory");
  if (atMs + KEY_TIME_SKEW_MS < key.createdAt) throw new SenderKeyNotValid("the message is older than the sender key that signed it");
  const successor = history.find((k) => k.ref.userId === ref.userId && k.ref.deviceId === ref.deviceId && k.ref.version === ref.version + 1);
  if (successor && atMs > successor.createdAt + KEY_TIME_SKEW_MS) {
    throw new SenderKeyNotValid("the message was signed with a key already replaced at its time");
  }
  // No skew allowance after a revocation: a revoked key may be in someone else's hands.
  const revoked = history
    .filter((k) => k.ref.userId === ref.userId && k.ref.deviceId === ref.deviceId && k.revokedAt !== null && k.ref.version >= ref.version)
    .map((k) => k.revokedAt!);
  if (revoked.length && atMs > Math.min(...revoked)) throw new SenderKeyNotValid("the message was signed with a key revoked before its time");
  return key;
}

export type { KeyRecord };
