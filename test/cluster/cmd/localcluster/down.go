package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopGrace is how long a daemon has to exit after SIGTERM. A node agent uses it to end its
// pods, whose own grace periods are cut short when the whole cluster goes away.
const stopGrace = 15 * time.Second

// down stops the daemons in the reverse order of their start (node agents first, so they end
// their pods while the API server still answers), then kills any pod process an agent left
// behind, and removes etcd's data: every `up` starts an empty cluster. Certificates stay.
func down(l layout) error {
	st, err := readState(l)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for i := len(st.Processes) - 1; i >= 0; i-- {
		stop(st.Processes[i])
	}
	killLeftoverPods(l)
	for _, dir := range []string{"etcd", "nodes", "apiserver"} {
		if err := os.RemoveAll(filepath.Join(l.run, dir)); err != nil {
			return err
		}
	}
	if err := os.Remove(l.state()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	fmt.Println("cluster stopped")
	return nil
}

func stop(p process) {
	if syscall.Kill(p.PID, syscall.SIGTERM) != nil {
		return
	}
	deadline := time.Now().Add(stopGrace)
	for time.Now().Before(deadline) {
		if !running(p.PID) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "localcluster: %s (pid %d) ignored SIGTERM for %s, killing it\n", p.Name, p.PID, stopGrace)
	_ = syscall.Kill(p.PID, syscall.SIGKILL)
}

// running is false once a process has exited, also while it lingers as a zombie of init.
func running(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state letter follows the parenthesised command name.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// killLeftoverPods ends the process group of every container whose agent died without ending
// it; the agents record each container's process group in a .pgid file.
func killLeftoverPods(l layout) {
	_ = filepath.WalkDir(filepath.Join(l.run, "nodes"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".pgid") {
			return nil
		}
		raw, readErr := os.ReadFile(path)
		if readErr != nil {
			return nil
		}
		if pgid, convErr := strconv.Atoi(strings.TrimSpace(string(raw))); convErr == nil && pgid > 1 {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		return nil
	})
}
