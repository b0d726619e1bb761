package layers

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/cairn-backup/cairn/"

// tools may import anything; only tests import them.
const tools = 99

// layer places every package of the module (docs/architecture.md). A
// package may import packages of its own layer or below.
var layer = map[string]int{
	"crypto": 0, "chunk": 0, "pathmatch": 0, "repo/backend": 0, "internal/delta": 0,
	"internal/pgstream": 0, "internal/rdb": 0, "internal/profile": 0, "internal/tailbuf": 0, "internal/procenv": 0,
	"internal/pgwal": 0,

	"index": 1, "tree": 1, "repo/backend/local": 1, "repo/backend/s3": 1, "repo/backend/cache": 1,
	"internal/fsmeta": 1,

	"repo": 2,

	"archiver": 3, "restorer": 3, "internal/checker": 3, "internal/pruner": 3, "internal/repair": 3,
	"internal/retention": 3, "internal/seen": 3, "internal/copier": 3,
	"internal/walarchive": 3,

	"internal/source": 4, "internal/source/command": 4, "internal/source/postgres": 4, "internal/source/redis": 4,

	"internal/backup": 5,

	"cmd/cairn": 6,

	"internal/clitest": tools, "internal/compat": tools, "internal/faults": tools, "internal/layers": tools,
	"repo/backend/backendtest": tools, "repo/backend/s3/s3test": tools, "internal/pgstream/pgtest": tools,
	"internal/rdb/redistest": tools, "bench/cairnbench": tools, "bench/latencyproxy": tools,
}

// TestImportsPointDown reads the import graph with go list and fails on
// any import of a higher layer or of a tool, and on packages not placed.
func TestImportsPointDown(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		own, ok := layer[pkg]
		if !ok {
			t.Errorf("package %s has no layer: place it in docs/architecture.md and here", pkg)
			continue
		}
		seen++
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			dep := strings.TrimPrefix(imp, module)
			l, ok := layer[dep]
			switch {
			case !ok:
				// Reported as a package of its own.
			case l == tools && own != tools:
				t.Errorf("%s imports the test tool %s", pkg, dep)
			case l > own:
				t.Errorf("%s (layer %d) imports %s (layer %d): imports must point down", pkg, own, dep, l)
			}
		}
	}
	if seen < 30 {
		t.Errorf("go list found only %d packages; is the module path %q right?", seen, module)
	}
}
