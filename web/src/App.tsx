// Screens: login (password, then TOTP), MFA enrolment with a QR code and recovery codes, and the
// signed-in shell with the automatic-logoff countdown and the consoles the role allows.
import QRCode from "qrcode";
import { type FormEvent, useCallback, useEffect, useState } from "react";
import { Admin } from "./Admin";
import { ApiError, api, currentSession, keepAlive, login, logout, type Session, setLoggedOffHandler } from "./api";
import { Auditor } from "./Auditor";
import { Chat } from "./Chat";

// Ask the server every few seconds whether the session still stands: an admin's deactivation or
// revocation logs an open page off within seconds, not at the next click.
const SESSION_CHECK_MS = 2000;

export function App() {
  const [session, setSession] = useState<Session | null>(null);
  const [notice, setNotice] = useState<string | null>(null);

  useEffect(() => {
    setLoggedOffHandler((reason) => {
      setSession(null);
      setNotice(reason);
    });
  }, []);

  if (!session) return <Login notice={notice} onSession={(s) => { setNotice(null); setSession(s); }} />;
  if (session.enrolmentOnly) return <Enrol session={session} onDone={(msg) => { void logout(msg); }} />;
  return <Shell session={session} onRefresh={() => setSession(currentSession())} />;
}

function Login({ notice, onSession }: { notice: string | null; onSession: (s: Session) => void }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [otp, setOtp] = useState("");
  const [needOtp, setNeedOtp] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onSession(await login(username, password, needOtp ? otp : undefined));
    } catch (err) {
      if (err instanceof ApiError && err.code === "mfa_required") setNeedOtp(true);
      else setError(err instanceof ApiError ? `${err.message} (${err.code})` : String(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="login">
      <h1>SafeHarbor</h1>
      {notice && <p className="notice" data-testid="notice">{notice}</p>}
      <form onSubmit={submit} aria-label="Log in">
        <label>Username <input name="username" autoComplete="username" value={username} onChange={(e) => setUsername(e.target.value)} required /></label>
        <label>Password <input name="password" type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} required /></label>
        {needOtp && (
          <label>Authentication code or recovery code
            <input name="otp" inputMode="numeric" autoComplete="one-time-code" value={otp} onChange={(e) => setOtp(e.target.value)} required autoFocus />
          </label>
        )}
        <button type="submit" disabled={busy}>{needOtp ? "Verify" : "Log in"}</button>
      </form>
      {error && <p className="error" role="alert">{error}</p>}
    </main>
  );
}

function Enrol({ session, onDone }: { session: Session; onDone: (message: string) => void }) {
  const [secret, setSecret] = useState<string | null>(null);
  const [qr, setQr] = useState<string | null>(null);
  const [code, setCode] = useState("");
  const [recovery, setRecovery] = useState<string[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let live = true;
    void (async () => {
      const body = await api<{ secret: string; otpauth_uri: string }>("POST", "/v1/auth/mfa/totp/enroll");
      const image = await QRCode.toDataURL(body.otpauth_uri, { margin: 1, width: 220 });
      if (live) {
        setSecret(body.secret);
        setQr(image);
      }
    })().catch((err) => setError(String(err)));
    return () => { live = false; };
  }, []);

  async function confirm(e: FormEvent) {
    e.preventDefault();
    try {
      const body = await api<{ recovery_codes: string[] }>("POST", "/v1/auth/mfa/totp/confirm", { code });
      setRecovery(body.recovery_codes);
    } catch (err) {
      setError(err instanceof ApiError ? `${err.message} (${err.code})` : String(err));
    }
  }

  return (
    <main className="login">
      <h1>Set up two-factor authentication</h1>
      <p>Your role ({session.user.role}) needs an authenticator app. Scan the code, then enter the 6-digit code it shows.</p>
      {qr && <img src={qr} alt="TOTP enrolment QR code" data-testid="totp-qr" />}
      {secret && <p>Or type this key: <code data-testid="totp-secret">{secret}</code></p>}
      {!recovery ? (
        <form onSubmit={confirm} aria-label="Confirm authenticator">
          <label>Code <input name="code" inputMode="numeric" value={code} onChange={(e) => setCode(e.target.value)} required /></label>
          <button type="submit">Confirm</button>
        </form>
      ) : (
        <section>
          <h2>Recovery codes</h2>
          <p>Keep these somewhere safe: each one logs you in once without the app.</p>
          <ul className="codes" data-testid="recovery-codes">{recovery.map((c) => <li key={c}><code>{c}</code></li>)}</ul>
          <button onClick={() => onDone("Two-factor authentication is on. Log in again with a code.")}>Continue to login</button>
        </section>
      )}
      {error && <p className="error" role="alert">{error}</p>}
    </main>
  );
}

function Shell({ session, onRefresh }: { session: Session; onRefresh: () => void }) {
  const [now, setNow] = useState(Date.now());
  const role = session.user.role;
  const tabs = [
    ...(role !== "auditor" ? ["chat"] : []),
    ...(role === "admin" ? ["admin"] : []),
    ...(role === "auditor" || role === "admin" ? ["audit"] : []),
  ];
  const [tab, setTab] = useState(tabs[0] ?? "chat");
  const live = currentSession() ?? session;
  const remaining = Math.max(0, Math.ceil((Math.min(live.expiresAt, live.absoluteExpiresAt) - now) / 1000));
  const warnAt = Math.min(60, Math.floor(live.idleTimeoutS / 3));

  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(timer);
  }, []);

  useEffect(() => {
    if (remaining === 0) void logout(`You were logged off automatically after ${live.idleTimeoutS} s without activity.`);
  }, [remaining, live.idleTimeoutS]);

  useEffect(() => {
    const check = setInterval(() => { void api("GET", "/v1/auth/me").catch(() => undefined); }, SESSION_CHECK_MS);
    return () => clearInterval(check);
  }, []);

  const activity = useCallback(() => { void keepAlive().then(onRefresh); }, [onRefresh]);
  useEffect(() => {
    window.addEventListener("pointerdown", activity);
    window.addEventListener("keydown", activity);
    return () => {
      window.removeEventListener("pointerdown", activity);
      window.removeEventListener("keydown", activity);
    };
  }, [activity]);

  return (
    <div className="shell">
      <header>
        <strong>SafeHarbor</strong>
        <span data-testid="whoami">{session.user.name} · {role}</span>
        <nav>{tabs.map((t) => <button key={t} className={t === tab ? "active" : ""} onClick={() => setTab(t)}>{t}</button>)}</nav>
        <span className={remaining <= warnAt ? "countdown warn" : "countdown"} data-testid="countdown">
          Automatic logoff in {Math.floor(remaining / 60)}:{String(remaining % 60).padStart(2, "0")}
        </span>
        <button onClick={() => void logout("You logged off.")}>Log off</button>
      </header>
      {remaining <= warnAt && (
        <p className="warning" role="alert" data-testid="logoff-warning">
          You will be logged off in {remaining} s for inactivity. <button onClick={activity}>Stay logged in</button>
        </p>
      )}
      {tab === "chat" && <Chat session={session} />}
      {tab === "admin" && <Admin />}
      {tab === "audit" && <Auditor />}
    </div>
  );
}
