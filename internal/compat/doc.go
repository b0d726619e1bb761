// Package compat holds the format compatibility tests: repositories written
// by earlier versions (testdata/golden-repo) must stay readable forever.
package compat
