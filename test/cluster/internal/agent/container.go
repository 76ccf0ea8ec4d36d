package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// The kubelet's crash-loop back-off: 10s, doubling, at most five minutes. The first restart
	// comes after a short pause so a crash shows in status before the next run.
	firstRestartDelay = time.Second
	backoffBase       = 10 * time.Second
	backoffMax        = 5 * time.Minute
)

// container is one container of a pod and the process that currently runs it.
type container struct {
	w    *podWorker
	spec corev1.Container
	init bool

	// Guarded by w.mu, as status reads them together with the pod's own fields.
	state     corev1.ContainerState
	lastState corev1.ContainerState
	restarts  int32
	ready     bool
	started   bool
	cmd       *exec.Cmd
	exited    chan struct{}
}

func newContainer(w *podWorker, spec corev1.Container, init bool) *container {
	return &container{w: w, spec: spec, init: init}
}

// supervise runs the container and restarts it as the pod's restart policy says, until the
// policy says it is done or the pod stops.
func (c *container) supervise(ctx context.Context) {
	for {
		exitCode, ok := c.runOnce(ctx)
		if !ok || c.w.isStopped() || !c.shouldRestart(exitCode) {
			return
		}
		if !c.backOff(ctx) {
			return
		}
	}
}

// runToSuccess runs an init container until it exits 0; under restartPolicy Never one
// failure fails the pod.
func (c *container) runToSuccess(ctx context.Context) bool {
	for {
		exitCode, ok := c.runOnce(ctx)
		if !ok || c.w.isStopped() {
			return false
		}
		if exitCode == 0 {
			return true
		}
		if c.w.currentPod().Spec.RestartPolicy == corev1.RestartPolicyNever {
			c.w.mu.Lock()
			c.w.failed = true
			c.w.mu.Unlock()
			return false
		}
		if !c.backOff(ctx) {
			return false
		}
	}
}

func (c *container) shouldRestart(exitCode int32) bool {
	switch c.w.currentPod().Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return exitCode != 0
	default:
		return true
	}
}

// backOff waits before a restart, showing CrashLoopBackOff meanwhile, and moves the finished
// run into lastState. It reports false when the pod stopped during the wait.
func (c *container) backOff(ctx context.Context) bool {
	c.w.mu.Lock()
	delay := firstRestartDelay
	if c.restarts > 0 {
		delay = backoffBase << min(c.restarts-1, 5)
		delay = min(delay, backoffMax)
	}
	c.lastState = c.state
	c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
		Reason:  "CrashLoopBackOff",
		Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", delay, c.spec.Name, c.w.pod.Name),
	}}
	c.w.mu.Unlock()
	c.w.markChanged()
	select {
	case <-c.w.stopped:
		return false
	case <-ctx.Done():
		return false
	case <-time.After(delay):
	}
	c.w.mu.Lock()
	c.restarts++
	c.w.mu.Unlock()
	return true
}

// runOnce starts the process and waits for it. It reports the exit code, or false when the
// container could not start and must not be retried (an image missing from the table, under
// restartPolicy Never) or the pod stopped.
func (c *container) runOnce(ctx context.Context) (int32, bool) {
	cmd, logFile, err := c.command()
	if err != nil {
		return c.startFailed(ctx, err)
	}
	defer logFile.Close()

	c.w.mu.Lock()
	if c.w.isStopped() {
		c.w.mu.Unlock()
		return 0, false
	}
	err = startProcess(cmd)
	if err != nil {
		c.w.mu.Unlock()
		return c.startFailed(ctx, err)
	}
	exited := make(chan struct{})
	startedAt := metav1.Now()
	c.cmd, c.exited, c.started = cmd, exited, true
	c.ready = c.spec.ReadinessProbe == nil
	c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: startedAt}}
	c.w.mu.Unlock()
	c.recordProcessGroup(cmd.Process.Pid)
	c.w.a.recorder.Eventf(c.w.currentPod(), corev1.EventTypeNormal, "Started", "Started container %s", c.spec.Name)
	c.w.markChanged()

	probeCtx, stopProbes := context.WithCancel(ctx)
	go c.probe(probeCtx, c.spec.ReadinessProbe, c.setReady)
	go c.probe(probeCtx, c.spec.LivenessProbe, c.livenessFailed)

	waitErr := cmd.Wait()
	stopProbes()
	exitCode := exitCodeOf(cmd, waitErr)
	reason := "Completed"
	if exitCode != 0 {
		reason = "Error"
	}
	c.w.mu.Lock()
	c.ready = false
	c.cmd = nil
	c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode:    exitCode,
		Reason:      reason,
		StartedAt:   startedAt,
		FinishedAt:  metav1.Now(),
		ContainerID: c.containerID(),
	}}
	c.w.mu.Unlock()
	close(exited)
	_ = os.Remove(c.pgidPath())
	c.w.markChanged()
	return exitCode, true
}

// startFailed records a container that could not start as the kubelet does: a missing image
// is waiting ErrImagePull, anything else a run that ended with exit code 128.
func (c *container) startFailed(ctx context.Context, err error) (int32, bool) {
	var imageErr *imageError
	c.w.mu.Lock()
	if errors.As(err, &imageErr) {
		c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
			Reason: "ErrImagePull", Message: err.Error(),
		}}
	} else {
		now := metav1.Now()
		c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 128, Reason: "StartError", Message: err.Error(), StartedAt: now, FinishedAt: now,
		}}
	}
	c.w.mu.Unlock()
	c.w.markChanged()
	c.w.a.recorder.Eventf(c.w.currentPod(), corev1.EventTypeWarning, "Failed", "Error: %s", err.Error())
	if imageErr != nil {
		// The table is read once at start; wait for the pod to be deleted.
		select {
		case <-c.w.stopped:
		case <-ctx.Done():
		}
		return 0, false
	}
	return 128, true
}

// kill sends SIGTERM to the container's process group and SIGKILL after grace.
//
// TODO: lifecycle hooks (postStart, preStop) and startupProbe are not run; a container that
// relies on preStop to drain gets SIGTERM straight away.
// TODO: resources.limits and securityContext are not enforced (no cgroups, no user switch);
// every container runs as the agent's user with the machine's whole CPU and memory.
func (c *container) kill(grace time.Duration) {
	c.w.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.w.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
	}
	// The group may hold children that outlived the main process; SIGKILL ends them too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-exited
}

func (c *container) setReady(ok bool) {
	c.w.mu.Lock()
	changed := c.ready != ok && c.cmd != nil
	if changed {
		c.ready = ok
	}
	c.w.mu.Unlock()
	if changed {
		c.w.markChanged()
	}
}

// livenessFailed restarts a container whose liveness probe failed: its process group is
// killed and supervise applies the restart policy.
func (c *container) livenessFailed(ok bool) {
	if ok {
		return
	}
	c.w.mu.Lock()
	cmd := c.cmd
	c.w.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		c.w.a.recorder.Eventf(c.w.currentPod(), corev1.EventTypeWarning, "Unhealthy",
			"Liveness probe failed, container %s will be restarted", c.spec.Name)
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

func (c *container) containerID() string {
	return fmt.Sprintf("process://%s-%s-%d", c.w.uid, c.spec.Name, c.restarts)
}

func (c *container) logPath(restarts int32) string {
	return filepath.Join(c.w.dir, "logs", c.spec.Name, strconv.Itoa(int(restarts))+".log")
}

func (c *container) pgidPath() string {
	return filepath.Join(c.w.dir, c.spec.Name+".pgid")
}

// recordProcessGroup lets `localcluster down` end the container should this agent die first.
func (c *container) recordProcessGroup(pid int) {
	_ = os.WriteFile(c.pgidPath(), []byte(strconv.Itoa(pid)), 0o644)
}

func exitCodeOf(cmd *exec.Cmd, waitErr error) int32 {
	state := cmd.ProcessState
	if state == nil {
		return 128
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int32(ws.Signal())
	}
	if waitErr != nil && state.ExitCode() < 0 {
		return 128
	}
	return int32(state.ExitCode())
}

var namespaceOnce sync.Once
var namespacesWork bool

// startProcess starts the container in its own process group and, where the kernel allows,
// its own mount and UTS namespaces (see cmd/node-agent's run-container).
func startProcess(cmd *exec.Cmd) error {
	isolateProcess(cmd)
	return cmd.Start()
}

// isolateProcess gives cmd its own process group and, where they work, its own namespaces.
func isolateProcess(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	namespaceOnce.Do(func() { namespacesWork = probeNamespaces() })
	if namespacesWork {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS
		if os.Getuid() != 0 {
			// Without root, a user namespace grants the mount; the process runs as its root.
			cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
			cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
			cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
		}
	} else {
		cmd.Env = append(cmd.Env, "FLOTILLA_NO_NAMESPACES=1")
	}
}

// probeNamespaces checks once whether this machine lets us create mount namespaces.
func probeNamespaces() bool {
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS}
	if os.Getuid() != 0 {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
	}
	return cmd.Run() == nil
}
