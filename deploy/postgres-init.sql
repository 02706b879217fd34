-- One database per service (DESIGN.md: no service reads another's tables).
CREATE DATABASE safeharbor_audit;
CREATE DATABASE safeharbor_auth;
CREATE DATABASE safeharbor_keydir;
CREATE DATABASE safeharbor_push;
