// What this browser keeps for a user in IndexedDB. The keyring (private keys of every version) is
// stored encrypted under an AES-256-GCM key that WebCrypto generated non-extractable: IndexedDB holds
// the CryptoKey object itself, whose bytes no script can read. The private keys are in memory only while
// the user is logged in (HPKE, ML-KEM and the backup need them as bytes: WebCrypto has no HPKE or
// ML-KEM). Directory memory (pinned key, last checkpoint) and seen message ids are public data.
import { buf, type DirectoryMemory, Keyring } from "@safeharbor/client";

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

export async function saveKeyring(ring: Keyring): Promise<void> {
  const key = await wrappingKey(ring.userId);
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const plain = new TextEncoder().encode(JSON.stringify(ring.toJson()));
  const ct = await crypto.subtle.encrypt({ name: "AES-GCM", iv: buf(iv), additionalData: buf(new TextEncoder().encode(ring.userId)) }, key, buf(plain));
  await put(`keyring:${ring.userId}`, { iv, ct });
}

export async function loadKeyring(userId: string): Promise<Keyring | null> {
  const stored = await get<{ iv: Uint8Array; ct: ArrayBuffer }>(`keyring:${userId}`);
  if (!stored) return null;
  const key = await wrappingKey(userId);
  const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: buf(stored.iv), additionalData: buf(new TextEncoder().encode(userId)) }, key, stored.ct);
  return Keyring.fromJson(JSON.parse(new TextDecoder().decode(plain)) as Record<string, unknown>);
}

/** For the browser test and the security page: is the wrapping key really non-extractable? */
export async function wrappingKeyExtractable(userId: string): Promise<boolean | null> {
  const key = await get<CryptoKey>(`wrap:${userId}`);
  return key ? key.extractable : null;
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
