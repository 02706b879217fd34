// The gateway client. The session (access token) lives in this module's memory only: never in
// localStorage, sessionStorage or a cookie, so a reload or a closed tab is a logoff.
export interface User {
  id: string;
  name: string;
  role: string;
  mfa_enrolled: boolean;
}

export interface Session {
  accessToken: string;
  expiresAt: number; // ms: idle logoff when no activity refreshes it
  absoluteExpiresAt: number;
  idleTimeoutS: number;
  user: User;
  enrolmentOnly: boolean;
}

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly body: Record<string, unknown> = {}) {
    super(message);
  }
}

type LoggedOff = (reason: string) => void;
let session: Session | null = null;
let onLoggedOff: LoggedOff = () => undefined;
let refreshing: Promise<void> | null = null;

export function currentSession(): Session | null {
  return session;
}

export function setLoggedOffHandler(handler: LoggedOff): void {
  onLoggedOff = handler;
}

async function request(method: string, path: string, body?: unknown, token?: string): Promise<Response> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers["Authorization"] = `Bearer ${token}`;
  return fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "omit", cache: "no-store" });
}

async function errorOf(response: Response): Promise<ApiError> {
  let body: Record<string, unknown> = {};
  try {
    body = (await response.json()) as Record<string, unknown>;
  } catch {
    body = {};
  }
  const error = (body["error"] ?? {}) as Record<string, string>;
  return new ApiError(response.status, error["code"] ?? "error", error["message"] ?? response.statusText, body);
}

function fromLogin(body: Record<string, any>, enrolmentOnly: boolean): Session {
  return {
    accessToken: body["access_token"],
    expiresAt: Date.parse(body["expires_at"]),
    absoluteExpiresAt: Date.parse(body["absolute_expires_at"]),
    idleTimeoutS: Number(body["idle_timeout_s"]),
    user: body["user"],
    enrolmentOnly,
  };
}

export async function login(username: string, password: string, otp?: string): Promise<Session> {
  const response = await request("POST", "/v1/auth/login", { username, password, ...(otp ? { otp } : {}) });
  if (!response.ok) throw await errorOf(response);
  const body = (await response.json()) as Record<string, any>;
  // A role that needs MFA, not enrolled yet: the session only reaches the enrolment routes.
  const probe = await request("GET", "/v1/auth/me", undefined, body["access_token"]);
  session = fromLogin(body, probe.status === 403);
  return session;
}

/** Forget the session here and end it on the server (best effort). */
export async function logout(reason: string): Promise<void> {
  const ending = session;
  session = null;
  if (ending) await request("POST", "/v1/auth/logout", undefined, ending.accessToken).catch(() => undefined);
  onLoggedOff(reason);
}

/** Activity keeps the session alive: refresh once less than half of the idle timeout is left. */
export async function keepAlive(): Promise<void> {
  const s = session;
  if (!s || s.enrolmentOnly || refreshing) return;
  if (s.expiresAt - Date.now() > (s.idleTimeoutS * 1000) / 2) return;
  refreshing = (async () => {
    const response = await request("POST", "/v1/auth/refresh", undefined, s.accessToken);
    if (response.ok && session === s) session = fromLogin((await response.json()) as Record<string, any>, false);
    else if (response.status === 401) endLocally((await errorOf(response)).code);
  })().finally(() => {
    refreshing = null;
  });
  await refreshing;
}

function endLocally(code: string): void {
  session = null;
  onLoggedOff(code === "session_expired" ? "Your session expired." : "Your session was ended.");
}

/** A call through the gateway with the session's token; a 401 ends the session here too. */
export async function api<T = any>(method: string, path: string, body?: unknown): Promise<T> {
  const s = session;
  if (!s) throw new ApiError(401, "unauthenticated", "not logged in");
  if (Date.now() >= s.expiresAt || Date.now() >= s.absoluteExpiresAt) {
    await logout("You were logged off automatically.");
    throw new ApiError(401, "session_expired", "the session has expired");
  }
  const response = await request(method, path, body, s.accessToken);
  if (response.status === 401) {
    const error = await errorOf(response);
    if (session === s) endLocally(error.code);
    throw error;
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return undefined as T;
  const type = response.headers.get("Content-Type") ?? "";
  return (type.includes("json") ? await response.json() : await response.text()) as T;
}
