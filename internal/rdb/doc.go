// Package rdb moves Redis RDB snapshots: it fetches them from a server over
// the replication protocol (REPLCONF, PSYNC or SYNC, both the $<length> and
// the diskless $EOF:<mark> transfer forms), validates them while they stream
// (magic, version, end opcode, CRC64, and a walk of the structure that counts
// the keys of each database), and serves a stored RDB to a live server as a
// replication master so that the server loads it.
//
// It speaks RESP itself and needs neither redis-cli nor a client library.
package rdb
