// Package layers holds the test that keeps cairn's imports pointing down
// the layers drawn in docs/architecture.md. It has no code of its own.
package layers
