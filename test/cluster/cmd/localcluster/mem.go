package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// memory prints the resident memory of every cluster process: VmRSS now and VmHWM, the
// highest it has been, in MiB. Pods are not counted; they are the workload, not the cluster.
func memory(l layout) error {
	st, err := readState(l)
	if err != nil {
		return fmt.Errorf("no running cluster: %w", err)
	}
	var totalRSS, totalPeak int
	fmt.Printf("%-26s %8s %10s %10s\n", "process", "pid", "rss MiB", "peak MiB")
	for _, p := range st.Processes {
		rss, peak := procMemory(p.PID)
		totalRSS += rss
		totalPeak += peak
		fmt.Printf("%-26s %8d %10.1f %10.1f\n", p.Name, p.PID, float64(rss)/1024, float64(peak)/1024)
	}
	fmt.Printf("%-26s %8s %10.1f %10.1f\n", "total", "", float64(totalRSS)/1024, float64(totalPeak)/1024)
	return nil
}

// procMemory reads VmRSS and VmHWM (KiB) from /proc; a process that is gone counts 0.
func procMemory(pid int) (rss, peak int) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) < 2 {
			continue
		}
		value, _ := strconv.Atoi(fields[1])
		switch fields[0] {
		case "VmRSS:":
			rss = value
		case "VmHWM:":
			peak = value
		}
	}
	return rss, peak
}
