// Package faults holds the tests that try to break cairn's promises:
// SIGKILL and SIGINT at random moments, concurrent writers, prune racing
// backups and a full disk. Each test drives the real binary. See
// docs/reliability.md for the promises and which test checks each.
package faults
