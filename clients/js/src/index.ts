// @safeharbor/client: the browser SDK. Same envelopes, key records, directory proofs and backups as the
// Python SDK (clients/python); see clients/js/README.md.
export * from "./backup.js";
export * from "./checkpoint.js";
export * from "./directory.js";
export * from "./encoding.js";
export * from "./envelope.js";
export * from "./errors.js";
export * from "./hpke.js";
export * from "./keys.js";
export * from "./merkle.js";
export * from "./monitor.js";
