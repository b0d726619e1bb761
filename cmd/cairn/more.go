package main

import (
	"os"

	"github.com/spf13/cobra"
)

func lookupEnv(k string) (string, bool) { return os.LookupEnv(k) }

// moreCommands returns the snapshot commands (backup, restore, browse).
func (a *app) moreCommands() []*cobra.Command { return nil }
