package agent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestPhaseFollowsRestartPolicy(t *testing.T) {
	exited := func(code int32) *container {
		return &container{started: true, state: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: code},
		}}
	}
	running := &container{started: true, state: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	notStarted := &container{}
	cases := []struct {
		name       string
		policy     corev1.RestartPolicy
		containers []*container
		want       corev1.PodPhase
	}{
		{"all exited 0 under Never", corev1.RestartPolicyNever, []*container{exited(0), exited(0)}, corev1.PodSucceeded},
		{"one failed under Never", corev1.RestartPolicyNever, []*container{exited(0), exited(2)}, corev1.PodFailed},
		{"one still running", corev1.RestartPolicyNever, []*container{exited(1), running}, corev1.PodRunning},
		{"one not started yet", corev1.RestartPolicyAlways, []*container{running, notStarted}, corev1.PodPending},
		{"failed under OnFailure restarts", corev1.RestartPolicyOnFailure, []*container{exited(1)}, corev1.PodRunning},
	}
	for _, tc := range cases {
		w := &podWorker{
			pod:        &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: tc.policy}},
			containers: tc.containers,
			initDone:   true,
		}
		if got := w.phase(); got != tc.want {
			t.Errorf("%s: phase = %s, want %s", tc.name, got, tc.want)
		}
	}
}
