// `vite preview` serves the built app for `make run` (tools/devstack starts it beside the stack) and
// proxies the API and Stream to one origin, so the page talks only to 'self': no CORS, a strict CSP.
import react from "@vitejs/plugin-react";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const gateway = process.env["SAFEHARBOR_GATEWAY_URL"] ?? "http://127.0.0.1:8080";
const stream = process.env["SAFEHARBOR_STREAM_URL"] ?? "http://127.0.0.1:8190";

// No 'unsafe-inline' anywhere; 'wasm-unsafe-eval' only for argon2id (hash-wasm) in key backups.
export const CSP = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const securityHeaders = {
  "Content-Security-Policy": CSP,
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  "Referrer-Policy": "no-referrer",
  "Cross-Origin-Opener-Policy": "same-origin",
  "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
};

const proxy = {
  "/v1": { target: gateway },
  "/.well-known": { target: gateway },
  "/stream": { target: stream, ws: true, rewrite: (path: string) => path.replace(/^\/stream/, "") },
};

export default defineConfig({
  plugins: [react()],
  // The dev server injects inline scripts for hot reload, so only the built app gets the CSP.
  server: { host: "127.0.0.1", proxy },
  preview: { host: "127.0.0.1", headers: securityHeaders, proxy },
  // @hpke/common falls back to Node's `import("crypto")` where globalThis.crypto is missing; in a browser
  // that module is the Web Crypto the page already has.
  resolve: { alias: { crypto: fileURLToPath(new URL("src/webcrypto.ts", import.meta.url)) } },
  build: {
    target: "es2022",
    sourcemap: false,
    // Libraries in chunks of their own: the app's code changes more often than they do, and no chunk
    // passes Vite's 500 kB warning.
    rolldownOptions: {
      output: {
        codeSplitting: {
          groups: [
            { name: "stream-chat", test: /node_modules[\\/]stream-chat/ },
            { name: "vendor", test: /node_modules/ },
          ],
        },
      },
    },
  },
});
