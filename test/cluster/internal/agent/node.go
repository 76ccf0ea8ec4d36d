package agent

import (
	"context"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

const (
	// GPUResource is the extended resource GPU pods request, as NVIDIA's device plugin names it.
	GPUResource corev1.ResourceName = "nvidia.com/gpu"
	// SiteLabel names the Flotilla site a node belongs to.
	SiteLabel = "flotilla.dev/site"
	// kubeletVersion is what the node reports; it matches the control plane's version.
	kubeletVersion = "v1.37.2"
	// heartbeatPeriod matches the kubelet's lease renewal; the node lifecycle controller marks
	// a node NotReady after 40s without one.
	heartbeatPeriod = 10 * time.Second
	leaseSeconds    = 40
)

// registerNode creates the Node, or refreshes labels and status of one left by an earlier run.
func (a *Agent) registerNode(ctx context.Context) error {
	nodes := a.client.CoreV1().Nodes()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Labels: a.nodeLabels()},
		Status:     a.nodeStatus(),
	}
	for {
		_, err := nodes.Create(ctx, node, metav1.CreateOptions{})
		if err == nil {
			break
		}
		if apierrors.IsAlreadyExists(err) {
			existing, getErr := nodes.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
			if getErr != nil {
				return getErr
			}
			for k, v := range a.nodeLabels() {
				existing.Labels[k] = v
			}
			if _, err = nodes.Update(ctx, existing, metav1.UpdateOptions{}); err == nil {
				break
			}
		}
		a.log.Warn("node registration failed, retrying", "node", a.cfg.NodeName, "error", err.Error())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	a.log.Info("node registered", "node", a.cfg.NodeName)
	return a.updateNodeStatus(ctx)
}

func (a *Agent) nodeLabels() map[string]string {
	return map[string]string{
		"kubernetes.io/hostname":        a.cfg.NodeName,
		"kubernetes.io/os":              "linux",
		"kubernetes.io/arch":            runtime.GOARCH,
		"topology.kubernetes.io/region": a.cfg.Region,
		"topology.kubernetes.io/zone":   a.cfg.Zone,
		SiteLabel:                       a.cfg.Site,
	}
}

func (a *Agent) nodeStatus() corev1.NodeStatus {
	now := metav1.Now()
	resources := corev1.ResourceList{
		corev1.ResourceCPU:              a.cfg.CPU,
		corev1.ResourceMemory:           a.cfg.Memory,
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
		GPUResource:                     *resource.NewQuantity(a.cfg.GPUs, resource.DecimalSI),
	}
	condition := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg,
			LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return corev1.NodeStatus{
		Capacity:    resources,
		Allocatable: resources,
		Conditions: []corev1.NodeCondition{
			condition(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "node agent has sufficient memory available"),
			condition(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "node agent has no disk pressure"),
			condition(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "node agent has sufficient PID available"),
			condition(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "node agent is posting ready status"),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: a.cfg.NodeName},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{
			KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(a.cfg.Port)},
		},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID:               a.cfg.NodeName,
			SystemUUID:              a.cfg.NodeName,
			BootID:                  a.cfg.NodeName,
			KernelVersion:           "local",
			OSImage:                 "local processes",
			ContainerRuntimeVersion: "process://0.1.0",
			KubeletVersion:          kubeletVersion,
			OperatingSystem:         "linux",
			Architecture:            runtime.GOARCH,
		},
	}
}

// updateNodeStatus writes a fresh status; the transition times of unchanged conditions stay.
func (a *Agent) updateNodeStatus(ctx context.Context) error {
	nodes := a.client.CoreV1().Nodes()
	node, err := nodes.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	status := a.nodeStatus()
	for i, c := range status.Conditions {
		for _, old := range node.Status.Conditions {
			if old.Type == c.Type && old.Status == c.Status && !old.LastTransitionTime.IsZero() {
				status.Conditions[i].LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	node.Status = status
	_, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the node's Lease and status until ctx ends.
func (a *Agent) heartbeat(ctx context.Context) {
	ticker := time.NewTicker(heartbeatPeriod)
	defer ticker.Stop()
	for {
		if err := a.renewLease(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("lease renewal failed", "node", a.cfg.NodeName, "error", err.Error())
		}
		if err := a.updateNodeStatus(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("node status update failed", "node", a.cfg.NodeName, "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (a *Agent) renewLease(ctx context.Context) error {
	leases := a.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node, nodeErr := a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
		if nodeErr != nil {
			return nodeErr
		}
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name: a.cfg.NodeName,
				// Owned by the Node, so deleting the Node removes its Lease.
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
				}},
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(a.cfg.NodeName),
				LeaseDurationSeconds: ptr.To[int32](leaseSeconds),
				RenewTime:            &now,
			},
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.RenewTime = &now
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}
