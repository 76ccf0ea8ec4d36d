package agent

import (
	"os"
	"path/filepath"
	"testing"
)

func TestImageTableResolvesFirstMatchAndSubstitutesRepo(t *testing.T) {
	file := filepath.Join(t.TempDir(), "images.yaml")
	table := `images:
  - match: ghcr.io/flotilla/operator:*
    entrypoint: [node, <repo>/bin/flotilla.js]
    cmd: [operator]
  - match: busybox:*
    cmd: [sh]
`
	if err := os.WriteFile(file, []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
	images, err := LoadImageTable(file, "/src/flotilla")
	if err != nil {
		t.Fatal(err)
	}

	op, err := images.Resolve("ghcr.io/flotilla/operator:0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	if got := op.Entrypoint[1]; got != "/src/flotilla/bin/flotilla.js" {
		t.Errorf("entrypoint[1] = %q, want the repo substituted", got)
	}
	// An untagged Docker Hub name is busybox:latest, as a runtime would read it.
	for _, name := range []string{"busybox", "docker.io/library/busybox:1.37", "busybox@sha256:abc"} {
		if _, err := images.Resolve(name); err != nil {
			t.Errorf("Resolve(%q): %v", name, err)
		}
	}
	if _, err := images.Resolve("nginx:1.27"); err == nil {
		t.Error("Resolve(nginx:1.27) found an entry, want an error naming the image")
	}
}
