// What `import("crypto")` means in the browser build (vite.config.ts aliases it): @hpke/common's Node
// fallback reads `webcrypto` from it, and the page's Web Crypto is that object.
export const webcrypto: Crypto = globalThis.crypto;
