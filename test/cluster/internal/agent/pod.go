package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// A pod whose volumes cannot be prepared yet tries again, soon at first: right after binding
// the Node authorizer may not yet know the pod is ours, which passes in well under a second;
// a Secret that does not exist yet may take longer.
const (
	setupRetryFirst = 250 * time.Millisecond
	setupRetryMax   = 2 * time.Second
)

// podWorker runs one pod: it prepares the pod's folder, IP and volumes, runs init containers
// one after another, then supervises the containers, and ends them when the pod is deleted.
type podWorker struct {
	a   *Agent
	uid types.UID
	dir string // <root>/pods/<uid>

	mu           sync.Mutex
	pod          *corev1.Pod
	ip           string
	gpus         string // NVIDIA_VISIBLE_DEVICES of the pod, "" without GPUs
	startTime    metav1.Time
	waitReason   string // why no container started yet, shown as each one's waiting state
	waitMessage  string
	volumes      map[string]string // volume name -> folder holding its files
	initDone     bool
	failed       bool // an init container failed under restartPolicy Never
	initStatus   []*container
	containers   []*container
	deleting     bool
	released     bool          // IP and GPUs went back to the node's pools
	hosts        string        // what the pod's hosts file holds
	stopped      chan struct{} // closed once the pod must not start or restart anything
	stopOnce     sync.Once
	gone         chan struct{} // closed when the pod object left the API
	statusSignal chan struct{}
}

func newPodWorker(a *Agent, pod *corev1.Pod) *podWorker {
	w := &podWorker{
		a:            a,
		uid:          pod.UID,
		dir:          filepath.Join(a.cfg.RootDir, "pods", string(pod.UID)),
		pod:          pod.DeepCopy(),
		startTime:    metav1.Now(),
		waitReason:   "ContainerCreating",
		stopped:      make(chan struct{}),
		gone:         make(chan struct{}),
		statusSignal: make(chan struct{}, 1),
	}
	for i := range pod.Spec.InitContainers {
		w.initStatus = append(w.initStatus, newContainer(w, pod.Spec.InitContainers[i], true))
	}
	for i := range pod.Spec.Containers {
		w.containers = append(w.containers, newContainer(w, pod.Spec.Containers[i], false))
	}
	return w
}

func (w *podWorker) currentPod() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

// update takes the newest pod from the informer; a deletion timestamp starts termination.
func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod.DeepCopy()
	startDelete := pod.DeletionTimestamp != nil && !w.deleting
	if startDelete {
		w.deleting = true
	}
	w.mu.Unlock()
	if startDelete {
		go w.terminate(pod)
	}
}

// remove is the pod gone from the API without a graceful delete: end it now.
func (w *podWorker) remove() {
	close(w.gone)
	w.killAll(0)
	w.releaseResources()
}

func (w *podWorker) run(ctx context.Context) {
	go w.syncStatusLoop(ctx)
	w.markChanged()

	if !w.setup(ctx) {
		return
	}
	if !w.runInitContainers(ctx) {
		w.markChanged()
		return
	}
	var wg sync.WaitGroup
	for _, c := range w.containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.supervise(ctx)
		}()
	}
	wg.Wait()
	w.markChanged()
	// A pod that finished keeps its status (IP included) but gives its IP and GPUs back.
	if !w.isStopped() {
		w.releaseResources()
	}
}

// setup prepares the pod's folder, IP, GPUs and volumes, retrying until it works or the
// pod goes away. It reports whether the pod may start.
func (w *podWorker) setup(ctx context.Context) bool {
	retry := setupRetryFirst
	for {
		err := w.trySetup(ctx)
		if err == nil {
			return true
		}
		w.mu.Lock()
		w.waitReason, w.waitMessage = "ContainerCreating", err.Error()
		w.mu.Unlock()
		w.markChanged()
		w.a.log.Warn("pod setup failed, retrying", "pod", w.key(), "error", err.Error())
		select {
		case <-w.stopped:
			return false
		case <-ctx.Done():
			return false
		case <-time.After(retry):
		}
		retry = min(2*retry, setupRetryMax)
	}
}

func (w *podWorker) trySetup(ctx context.Context) error {
	pod := w.currentPod()
	if err := os.MkdirAll(filepath.Join(w.dir, "logs"), 0o755); err != nil {
		return err
	}
	w.mu.Lock()
	needIP, needGPUs := w.ip == "", w.gpus == ""
	w.mu.Unlock()
	if needIP {
		ip, err := w.a.ips.allocate()
		if err != nil {
			return err
		}
		w.mu.Lock()
		w.ip = ip
		w.mu.Unlock()
	}
	if n := podGPUs(pod); n > 0 && needGPUs {
		devices, err := w.a.gpus.allocate(n)
		if err != nil {
			return err
		}
		w.mu.Lock()
		w.gpus = devices
		w.mu.Unlock()
	}
	volumes, err := w.prepareVolumes(ctx, pod)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.volumes = volumes
	w.waitReason, w.waitMessage = "", ""
	w.mu.Unlock()
	w.writeHostsFile()
	return nil
}

// runInitContainers runs each init container to success, in order, as the kubelet does.
func (w *podWorker) runInitContainers(ctx context.Context) bool {
	for _, c := range w.initStatus {
		if !c.runToSuccess(ctx) {
			return false
		}
	}
	w.mu.Lock()
	w.initDone = true
	w.mu.Unlock()
	w.markChanged()
	return true
}

// terminate is a graceful delete: SIGTERM, the pod's grace period, SIGKILL, then the final
// delete of the API object that frees its name.
func (w *podWorker) terminate(pod *corev1.Pod) {
	grace := 30 * time.Second
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	w.a.recorder.Eventf(pod, corev1.EventTypeNormal, "Killing", "Stopping pod with grace period %s", grace)
	w.killAll(grace)
	w.syncStatus(context.Background())
	w.releaseResources()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := w.a.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		w.a.log.Warn("final pod delete failed", "pod", w.key(), "error", err.Error())
	}
}

// killAll stops the pod for good: no container starts again, every running one gets SIGTERM
// and, after grace, SIGKILL.
func (w *podWorker) killAll(grace time.Duration) {
	w.stopOnce.Do(func() { close(w.stopped) })
	var wg sync.WaitGroup
	for _, c := range append(append([]*container{}, w.initStatus...), w.containers...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.kill(grace)
		}()
	}
	wg.Wait()
}

func (w *podWorker) isStopped() bool {
	select {
	case <-w.stopped:
		return true
	default:
		return false
	}
}

func (w *podWorker) releaseResources() {
	w.mu.Lock()
	ip, gpus, released := w.ip, w.gpus, w.released
	w.released = true
	w.mu.Unlock()
	if released {
		return
	}
	if ip != "" {
		w.a.ips.release(ip)
	}
	if gpus != "" {
		w.a.gpus.release(gpus)
	}
}

func (w *podWorker) key() string {
	pod := w.currentPod()
	return pod.Namespace + "/" + pod.Name
}

// markChanged asks the status loop to write the pod's status soon.
func (w *podWorker) markChanged() {
	select {
	case w.statusSignal <- struct{}{}:
	default:
	}
}

// syncStatusLoop writes status whenever something changed, until the pod is gone.
func (w *podWorker) syncStatusLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.gone:
			return
		case <-w.statusSignal:
		}
		w.syncStatus(ctx)
	}
}

func (w *podWorker) syncStatus(ctx context.Context) {
	pods := w.a.client.CoreV1().Pods(w.currentPod().Namespace)
	for attempt := 0; attempt < 5; attempt++ {
		pod := w.currentPod()
		updated := pod.DeepCopy()
		updated.Status = w.status(pod)
		_, err := pods.UpdateStatus(ctx, updated, metav1.UpdateOptions{})
		if err == nil || apierrors.IsNotFound(err) || ctx.Err() != nil {
			return
		}
		if !apierrors.IsConflict(err) {
			w.a.log.Warn("pod status update failed", "pod", w.key(), "error", err.Error())
			time.Sleep(500 * time.Millisecond)
			continue
		}
		fresh, getErr := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if getErr != nil {
			if !errors.Is(getErr, context.Canceled) {
				w.a.log.Warn("pod read failed", "pod", w.key(), "error", getErr.Error())
			}
			return
		}
		if fresh.UID != w.uid {
			return
		}
		w.mu.Lock()
		w.pod = fresh
		w.mu.Unlock()
	}
}

// podGPUs is the number of nvidia.com/gpu the pod's containers ask for.
func podGPUs(pod *corev1.Pod) int64 {
	var n int64
	for _, c := range pod.Spec.Containers {
		if q, ok := c.Resources.Limits[GPUResource]; ok {
			n += q.Value()
		} else if q, ok := c.Resources.Requests[GPUResource]; ok {
			n += q.Value()
		}
	}
	return n
}

func (w *podWorker) writeHostsFile() {
	pod := w.currentPod()
	w.mu.Lock()
	ip := w.ip
	w.mu.Unlock()
	if ip == "" {
		return
	}
	content := "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
	content += fmt.Sprintf("%s %s\n", ip, pod.Name)
	for _, alias := range pod.Spec.HostAliases {
		for _, host := range alias.Hostnames {
			content += fmt.Sprintf("%s %s\n", alias.IP, host)
		}
	}
	for _, line := range w.a.services.hostsLines(pod.Namespace) {
		content += line + "\n"
	}
	w.mu.Lock()
	unchanged := content == w.hosts
	w.hosts = content
	w.mu.Unlock()
	if unchanged {
		return
	}
	// Rewritten in place, never replaced: each container sees this file through a bind mount
	// on /etc/hosts, which keeps pointing at the original inode.
	f, err := os.OpenFile(w.hostsPath(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		w.a.log.Warn("hosts file write failed", "pod", w.key(), "error", err.Error())
		return
	}
	defer f.Close()
	_, _ = f.WriteString(content)
}

func (w *podWorker) hostsPath() string { return filepath.Join(w.dir, "hosts") }
