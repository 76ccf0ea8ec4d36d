// Command localcluster starts and stops the local Kubernetes control plane: etcd, kube-apiserver,
// kube-scheduler, kube-controller-manager and one node agent per site, all on loopback
// addresses, with their state under test/cluster/.build/run.
//
//	localcluster up    start everything, wait until every node is Ready, write admin.kubeconfig
//	localcluster down  stop every process `up` started, pods included
//	localcluster env   print the shell line that points kubectl and helm at the cluster
//	localcluster mem   print the resident memory of each cluster process, now and at its peak
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: localcluster up|down|env|mem")
		os.Exit(2)
	}
	layout, err := newLayout()
	if err != nil {
		fail(err)
	}
	switch os.Args[1] {
	case "up":
		err = locked(layout, func() error { return up(context.Background(), layout) })
	case "down":
		err = locked(layout, func() error { return down(layout) })
	case "mem":
		err = memory(layout)
	case "env":
		fmt.Printf("export KUBECONFIG=%s\n", layout.adminKubeconfig())
	default:
		err = fmt.Errorf("command: must be up, down, env or mem, got %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "localcluster:", err)
	os.Exit(1)
}

// layout names the folders the cluster lives in. The binary sits in test/cluster/.build/bin, so
// everything is found relative to it and the cluster works from any working directory.
type layout struct {
	repo    string // repository root: <repo>/bin/flotilla.js is an image entrypoint
	cluster string // test/cluster
	bin     string // test/cluster/.build/bin
	run     string // test/cluster/.build/run, or $FLOTILLA_CLUSTER_RUN
}

func newLayout() (layout, error) {
	exe, err := os.Executable()
	if err != nil {
		return layout{}, err
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		return layout{}, err
	}
	bin := filepath.Dir(exe)
	cluster := filepath.Dir(filepath.Dir(bin))
	run := os.Getenv("FLOTILLA_CLUSTER_RUN")
	if run == "" {
		run = filepath.Join(cluster, ".build", "run")
	}
	return layout{
		repo:    filepath.Dir(filepath.Dir(cluster)),
		cluster: cluster,
		bin:     bin,
		run:     run,
	}, nil
}

func (l layout) pki() string             { return filepath.Join(l.run, "pki") }
func (l layout) logs() string            { return filepath.Join(l.run, "logs") }
func (l layout) state() string           { return filepath.Join(l.run, "state.json") }
func (l layout) adminKubeconfig() string { return filepath.Join(l.run, "admin.kubeconfig") }

// locked runs fn holding an exclusive lock on the run folder: test files that each ensure the
// cluster runs may call `up` at the same moment, and only one of them may start it.
func locked(l layout, fn func() error) error {
	if err := os.MkdirAll(l.run, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(l.run, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	return fn()
}
