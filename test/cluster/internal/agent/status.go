package agent

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// status computes the pod's status from its containers, as the kubelet's status manager
// would: phase, conditions, IPs and one status per container. Fields the API server owns
// (qosClass, the scheduler's PodScheduled condition) are kept from the current status.
func (w *podWorker) status(pod *corev1.Pod) corev1.PodStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	status := *pod.Status.DeepCopy()
	status.HostIP = "127.0.0.1"
	status.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	if w.ip != "" {
		status.PodIP = w.ip
		status.PodIPs = []corev1.PodIP{{IP: w.ip}}
	}
	status.StartTime = &w.startTime

	status.InitContainerStatuses = w.containerStatuses(w.initStatus)
	status.ContainerStatuses = w.containerStatuses(w.containers)
	status.Phase = w.phase()

	allReady := len(w.containers) > 0
	for _, c := range w.containers {
		allReady = allReady && c.ready
	}
	terminal := status.Phase == corev1.PodSucceeded || status.Phase == corev1.PodFailed
	sandbox := w.waitReason == "" && !terminal
	setCondition(&status, corev1.PodReadyToStartContainers, sandbox, "", "")
	setCondition(&status, corev1.PodInitialized, w.initDone || len(w.initStatus) == 0 && !w.failed,
		"ContainersNotInitialized", "containers with incomplete status: init containers")
	reason, message := "", ""
	if !allReady {
		reason, message = "ContainersNotReady", "containers with unready status"
		if terminal {
			reason = "PodCompleted"
		}
	}
	setCondition(&status, corev1.ContainersReady, allReady, reason, message)
	setCondition(&status, corev1.PodReady, allReady, reason, message)
	return status
}

// phase follows the kubelet: Pending until every container has started once, Running while
// any runs or will restart, then Succeeded or Failed.
func (w *podWorker) phase() corev1.PodPhase {
	if w.failed {
		return corev1.PodFailed
	}
	if !w.initDone && len(w.initStatus) > 0 {
		return corev1.PodPending
	}
	running, succeeded, failed, waiting := 0, 0, 0, 0
	for _, c := range w.containers {
		switch {
		case c.state.Running != nil:
			running++
		case c.state.Terminated != nil && c.state.Terminated.ExitCode == 0:
			succeeded++
		case c.state.Terminated != nil:
			failed++
		case c.started:
			// Waiting in back-off between two runs.
			running++
		default:
			waiting++
		}
	}
	restart := w.pod.Spec.RestartPolicy
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case w.deleting:
		// Terminated by a delete: the kubelet reports what the containers ended with.
		if failed > 0 {
			return corev1.PodFailed
		}
		return corev1.PodSucceeded
	case restart == corev1.RestartPolicyAlways:
		return corev1.PodRunning
	case failed > 0 && restart == corev1.RestartPolicyOnFailure:
		return corev1.PodRunning
	case failed > 0:
		return corev1.PodFailed
	default:
		return corev1.PodSucceeded
	}
}

func (w *podWorker) containerStatuses(containers []*container) []corev1.ContainerStatus {
	out := make([]corev1.ContainerStatus, 0, len(containers))
	for _, c := range containers {
		state := c.state
		if state.Waiting == nil && state.Running == nil && state.Terminated == nil {
			reason := w.waitReason
			if reason == "" {
				reason = "PodInitializing"
			}
			state.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: w.waitMessage}
		}
		started := state.Running != nil
		cs := corev1.ContainerStatus{
			Name:                 c.spec.Name,
			Image:                c.spec.Image,
			ImageID:              c.spec.Image,
			State:                state,
			LastTerminationState: c.lastState,
			Ready:                c.ready,
			RestartCount:         c.restarts,
			Started:              &started,
		}
		if c.started {
			cs.ContainerID = c.containerID()
		}
		out = append(out, cs)
	}
	return out
}

// setCondition sets a condition, moving its transition time only when its status changes.
func setCondition(status *corev1.PodStatus, t corev1.PodConditionType, ok bool, reason, message string) {
	value := corev1.ConditionFalse
	if ok {
		value = corev1.ConditionTrue
		reason, message = "", ""
	}
	for i := range status.Conditions {
		c := &status.Conditions[i]
		if c.Type != t {
			continue
		}
		if c.Status != value {
			c.LastTransitionTime = metav1.Now()
		}
		c.Status, c.Reason, c.Message = value, reason, message
		return
	}
	status.Conditions = append(status.Conditions, corev1.PodCondition{
		Type: t, Status: value, Reason: reason, Message: message, LastTransitionTime: metav1.Now(),
	})
}
