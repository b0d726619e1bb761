package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// The realtree data set: the s3 data set's tree (a copy of /usr/share,
// tens of thousands of small real files, plus 300 random files of 1-5 MiB)
// backed up into local repositories, where the per-file costs of many
// small files show without a network in between. The files data set's
// generated tree is kinder: fewer, evenly sized files.
const realtreeDataset = "realtree"

// realtreeInfo describes the realtree data set of a run.
type realtreeInfo struct {
	Tree          s3TreeInfo `json:"tree"`
	Day2Rewritten int        `json:"day2_files_rewritten"`
	Day2Bytes     int64      `json:"tree_bytes_day2"`
}

// runRealtree runs the first, unchanged and day-2 backups of a working copy
// of the tree, then a restore into an empty directory.
func (b *bench) runRealtree() error {
	src, treeInfo, err := b.s3TreeCorpus()
	if err != nil {
		return err
	}
	if err := b.checkS3Count(treeInfo.Files); err != nil {
		return err
	}
	info := &realtreeInfo{Tree: *treeInfo}
	b.res.Datasets[realtreeDataset] = info
	tree := filepath.Join(b.work, realtreeDataset, "tree")
	count1, err := b.copyS3Tree(realtreeDataset, src, tree, treeInfo)
	if err != nil {
		return err
	}
	warm(tree)
	c, r, err := b.newRepos(realtreeDataset)
	if err != nil {
		return err
	}
	count2, changed, err := b.treeBackups(realtreeDataset, [3]string{phaseFirst, phaseUnchanged, phaseDay2}, c, r, tree, count1)
	if err != nil {
		return err
	}
	info.Day2Rewritten, info.Day2Bytes = len(changed), count2.Bytes
	sample, err := restoreSampleOf(tree, changed)
	if err != nil {
		return err
	}
	restore := func(repo *repoT) inv {
		target := filepath.Join(b.work, realtreeDataset, "restore-"+repo.tool)
		return inv{repo: repo, args: []string{"restore", "latest", "--target", target}, input: count2.Bytes, check: func() error {
			defer os.RemoveAll(target)
			if err := checkTreeRestore(target, tree, count2, sample); err != nil {
				return fmt.Errorf("restore into %s: %w", target, err)
			}
			return nil
		}}
	}
	_, err = b.pair(realtreeDataset, realtreePhaseRestore, restore(c), restore(r))
	return err
}

const realtreePhaseRestore = "restore: --target"
