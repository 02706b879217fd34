// Key monitoring (the Python SDK's monitor_keys): every key record ever published for the user, proven
// page by page, chain-checked, and classified against this device's keyring.
import { DirectoryVerifier, type PublishedLeaf, verifyChain } from "./directory.js";
import { KeyRecordInvalid } from "./errors.js";
import { type Keyring, refKey, sameKey, type VerifiedKey } from "./keys.js";

export const THIS_DEVICE = "this_device"; // this device's id and a key pair its keyring holds
export const OTHER_DEVICE = "other_device"; // another device id of the user: the user confirms it is theirs
export const ALARM = "alarm"; // this device's id with a key this device never made
export type KeyStatus = typeof THIS_DEVICE | typeof OTHER_DEVICE | typeof ALARM;

export interface MonitoredKey {
  readonly key: VerifiedKey;
  readonly leafIndex: number | null;
  readonly status: KeyStatus;
  readonly publishedAt: string | null;
  readonly revokedAt: number | null;
  readonly revocationReason: string | null;
}

export interface KeyMonitorReport {
  readonly userId: string;
  readonly deviceId: string | null;
  readonly checkpointSize: number;
  readonly keys: readonly MonitoredKey[];
  readonly alarms: readonly MonitoredKey[];
  readonly otherDevices: readonly MonitoredKey[];
}

export function classify(ring: Keyring, key: VerifiedKey): KeyStatus {
  if (ring.deviceId === null || key.ref.deviceId !== ring.deviceId) return OTHER_DEVICE;
  const made = ring.get(key.ref);
  return made && sameKey(made, key.record) ? THIS_DEVICE : ALARM;
}

/** Fetch every page of `GET /v1/keys/{user}/audit` with `fetchPage(cursor)` and build the report. */
export async function monitorKeys(o: {
  ring: Keyring;
  directory: DirectoryVerifier;
  fetchPage: (cursor: string | null) => Promise<Record<string, unknown>>;
}): Promise<KeyMonitorReport> {
  const leaves: PublishedLeaf[] = [];
  const seen = new Set<string>();
  let cursor: string | null = null;
  for (;;) {
    const body = await o.fetchPage(cursor);
    leaves.push(...(await o.directory.verifyUserAudit(body, o.ring.userId)));
    const following = body["next_cursor"];
    if (!following) break;
    cursor = String(following);
    if (seen.has(cursor)) throw new KeyRecordInvalid("the directory's monitoring pages loop");
    seen.add(cursor);
  }
  const keys = leaves.filter((l) => l.revokedAt === null);
  verifyChain(keys.map((l) => l.entry.key));
  const byRef = new Map(keys.map((l) => [refKey(l.entry.key.ref), l]));
  const revocations = new Map<string, PublishedLeaf>(); // device id -> its revocation
  for (const leaf of leaves) {
    if (leaf.revokedAt === null) continue;
    const revoked = leaf.entry.key;
    const listed = byRef.get(refKey(revoked.ref));
    if (!listed || listed.entry.key.record["sig_pub"] !== revoked.record["sig_pub"]) {
      throw new KeyRecordInvalid(`leaf ${leaf.entry.leafIndex} revokes a key the directory never listed`);
    }
    if (!revocations.has(revoked.ref.deviceId)) revocations.set(revoked.ref.deviceId, leaf);
  }
  const out: MonitoredKey[] = keys.map((leaf) => {
    const key = leaf.entry.key;
    let revocation = revocations.get(key.ref.deviceId) ?? null;
    // Revoking a device ends the version it names and the earlier ones only.
    if (revocation && revocation.entry.key.ref.version < key.ref.version) revocation = null;
    return {
      key,
      leafIndex: leaf.entry.leafIndex,
      status: classify(o.ring, key),
      publishedAt: leaf.appendedAt,
      revokedAt: revocation?.revokedAt ?? null,
      revocationReason: revocation?.revocationReason ?? null,
    };
  });
  return {
    userId: o.ring.userId,
    deviceId: o.ring.deviceId,
    checkpointSize: o.directory.lastCheckpoint?.size ?? 0,
    keys: out,
    alarms: out.filter((k) => k.status === ALARM),
    otherDevices: out.filter((k) => k.status === OTHER_DEVICE),
  };
}
