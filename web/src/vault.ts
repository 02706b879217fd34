// What this browser keeps for a user in IndexedDB. Each private key version is stored as WebCrypto keys
// generated or imported NON-EXTRACTABLE where WebCrypto has the algorithm: the Ed25519 signing key and the
// X25519 key of HPKE's DHKEM are CryptoKeys (IndexedDB keeps the objects; no script, ours included, can
// read their bytes; @hpke/core opens with them through WebCrypto). The ML-KEM-768 hybrid part has no
// WebCrypto form, so it is stored encrypted with AES-256-GCM under a non-extractable wrapping key, and is
// in memory as bytes while the user is logged in. Directory memory (pinned key, last checkpoint) and seen
// message ids are public data. Backups need the key bytes: see E2ee.backup (docs/SECURITY.md, "Web app").
import {
  b64urlDecode, b64urlEncode, buf, DeviceKeyPair, type DirectoryMemory, type HeldKeys, type HybridPrivateKey, Keyring,
} from "@safeharbor/client";

const DB = "safeharbor";
const STORE = "kv";

function open(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function get<T>(key: string): Promise<T | undefined> {
  const db = await open();
  return new Promise((resolve, reject) => {
    const req = db.transaction(STORE).objectStore(STORE).get(key);
    req.onsuccess = () => resolve(req.result as T | undefined);
    req.onerror = () => reject(req.error);
  });
}

async function put(key: string, value: unknown): Promise<void> {
  const db = await open();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).put(value, key);
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
  });
}

async function wrappingKey(userId: string): Promise<CryptoKey> {
  const existing = await get<CryptoKey>(`wrap:${userId}`);
  if (existing) return existing;
  const key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
  await put(`wrap:${userId}`, key);
  return key;
}

/** One key version as stored: public parts, the held CryptoKeys, the wrapped hybrid part. */
interface StoredPair {
  user_id: string;
  device_id: string;
  version: number;
  created_at: string;
  enc_pub: string;
  sig_pub: string;
  record: Record<string, unknown> | null;
  held: HeldKeys;
  pq: { iv: Uint8Array; ct: ArrayBuffer } | null;
}

interface StoredRing {
  format: 2;
  device_id: string | null;
  pairs: StoredPair[];
}

function pqAad(pair: { userId: string; deviceId: string; version: number }): ArrayBuffer {
  return buf(new TextEncoder().encode(JSON.stringify(["safeharbor/web/pq-key", pair.userId, pair.deviceId, pair.version])));
}

/** Store `ring` with every X25519/Ed25519 private key imported non-extractable; returns the ring in that
 *  held form (the caller drops the raw one, so the bytes leave memory too). */
export async function saveKeyring(ring: Keyring): Promise<Keyring> {
  const wrap = await wrappingKey(ring.userId);
  const held = new Keyring(ring.userId, ring.deviceId);
  const pairs: StoredPair[] = [];
  for (const raw of ring.pairs.values()) {
    const pair = await raw.toHeld();
    held.add(pair);
    let pq: StoredPair["pq"] = null;
    if (pair.pq) {
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const plain = new TextEncoder().encode(JSON.stringify([b64urlEncode(pair.pq.mlkemSeed), b64urlEncode(pair.pq.x25519Private)]));
      pq = { iv, ct: await crypto.subtle.encrypt({ name: "AES-GCM", iv: buf(iv), additionalData: pqAad(pair) }, wrap, buf(plain)) };
    }
    pairs.push({
      user_id: pair.userId, device_id: pair.deviceId, version: pair.version, created_at: pair.createdAt,
      enc_pub: pair.encPub, sig_pub: pair.sigPub, record: pair.record, held: pair.held!, pq,
    });
  }
  const stored: StoredRing = { format: 2, device_id: ring.deviceId, pairs };
  await put(`keyring:${ring.userId}`, stored);
  return held;
}

export async function loadKeyring(userId: string): Promise<Keyring | null> {
  const stored = await get<StoredRing | { iv: Uint8Array; ct: ArrayBuffer }>(`keyring:${userId}`);
  if (!stored) return null;
  const wrap = await wrappingKey(userId);
  if (!("format" in stored)) {
    // The earlier form (the whole keyring JSON under the wrapping key): read once, stored again held.
    const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: buf(stored.iv), additionalData: buf(new TextEncoder().encode(userId)) }, wrap, stored.ct);
    return saveKeyring(Keyring.fromJson(JSON.parse(new TextDecoder().decode(plain)) as Record<string, unknown>));
  }
  const ring = new Keyring(userId, stored.device_id);
  for (const item of stored.pairs) {
    const ref = { userId: item.user_id, deviceId: item.device_id, version: item.version };
    let pq: HybridPrivateKey | null = null;
    if (item.pq) {
      const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: buf(item.pq.iv), additionalData: pqAad(ref) }, wrap, item.pq.ct);
      const [seed, x] = JSON.parse(new TextDecoder().decode(plain)) as [string, string];
      pq = { kind: "mlkem768x25519-private", mlkemSeed: b64urlDecode(seed), x25519Private: b64urlDecode(x) };
    }
    ring.add(DeviceKeyPair.fromHeld({ ...ref, createdAt: item.created_at, held: item.held, encPub: item.enc_pub, sigPub: item.sig_pub, pq, record: item.record }));
  }
  return ring;
}

export async function loadDirectoryMemory(userId: string): Promise<DirectoryMemory> {
  return (await get<DirectoryMemory>(`directory:${userId}`)) ?? {};
}

export async function saveDirectoryMemory(userId: string, memory: DirectoryMemory): Promise<void> {
  await put(`directory:${userId}`, memory);
}

/** Replay detection: the first Stream message id each (cid, mid) was read under. */
export async function rememberSeen(userId: string, o: { cid: string; mid: string; transportId: string }): Promise<string | null> {
  const key = `seen:${userId}:${o.cid}:${o.mid}`;
  const first = await get<string>(key);
  if (first === undefined) {
    await put(key, o.transportId);
    return null;
  }
  return first === o.transportId ? null : first;
}
