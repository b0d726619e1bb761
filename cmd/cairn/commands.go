package main

import "github.com/spf13/cobra"

// commands lists every command of cairn, in the order of a nightly cycle;
// a new command is one line here and a cmd_*.go file that builds it.
func (a *app) commands() []*cobra.Command {
	return []*cobra.Command{
		a.initCommand(), a.keyCommand(),
		a.backupCommand(), a.snapshotsCommand(), a.lsCommand(), a.diffCommand(), a.dumpCommand(),
		a.restoreCommand(), a.copyCommand(), a.forgetCommand(), a.pruneCommand(),
		a.walPushCommand(), a.walFetchCommand(), a.walStatusCommand(),
		a.lockCommand(), a.checkCommand(), a.repairCommand(), a.statsCommand(), a.migrateCommand(),
	}
}
