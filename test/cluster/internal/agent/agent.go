// Package agent is a node agent of the local cluster: it stands in for the kubelet of one site.
// It registers a Node, keeps its Lease and Ready condition fresh, runs every pod bound to it
// as local processes, writes pod status the way the kubelet does, serves container logs to the
// API server, and keeps each pod's hosts file in step with the cluster's Services.
package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
)

// Config is everything one node agent is told on its command line.
type Config struct {
	Kubeconfig         string // the node's own identity, system:node:<name>
	ServicesKubeconfig string // an identity that may watch Services and EndpointSlices
	NodeName           string
	Site               string
	Region             string
	Zone               string
	CPU                resource.Quantity
	Memory             resource.Quantity
	GPUs               int64
	PodSubnet          *net.IPNet // pod IPs are handed out from here; .0 and .1 are never used
	Port               int        // HTTPS port of the container-log endpoint
	TLSCertFile        string
	TLSKeyFile         string
	ClientCAFile       string
	Images             *ImageTable
	RootDir            string // per-pod folders live under <RootDir>/pods/<uid>
}

// Agent runs the pods of one node.
type Agent struct {
	cfg      Config
	client   kubernetes.Interface
	log      *slog.Logger
	recorder record.EventRecorder
	services *serviceHosts
	ips      *ipPool
	gpus     *gpuPool
	// apiserverHost and apiserverPort become KUBERNETES_SERVICE_HOST/PORT inside pods: there is
	// no kube-proxy to route the kubernetes Service's ClusterIP.
	apiserverHost string
	apiserverPort string

	mu      sync.Mutex
	workers map[types.UID]*podWorker
}

// New connects to the API server with the node's credentials.
func New(cfg Config, log *slog.Logger) (*Agent, error) {
	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, err
	}
	svcCfg, err := clientcmd.BuildConfigFromFlags("", cfg.ServicesKubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--services-kubeconfig %s: %w", cfg.ServicesKubeconfig, err)
	}
	svcClient, err := kubernetes.NewForConfig(svcCfg)
	if err != nil {
		return nil, err
	}
	server, err := url.Parse(restCfg.Host)
	if err != nil {
		return nil, err
	}
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	a := &Agent{
		cfg:           cfg,
		client:        client,
		log:           log,
		recorder:      broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: cfg.NodeName}),
		ips:           newIPPool(cfg.PodSubnet),
		gpus:          newGPUPool(cfg.GPUs),
		apiserverHost: server.Hostname(),
		apiserverPort: server.Port(),
		workers:       map[types.UID]*podWorker{},
	}
	a.services = newServiceHosts(svcClient, a.rewriteHostsFiles, log)
	return a, nil
}

// Run registers the node and serves it until ctx ends, then stops every pod it runs.
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(a.cfg.RootDir, "pods"), 0o755); err != nil {
		return err
	}
	logServer, err := a.startLogServer()
	if err != nil {
		return err
	}
	defer logServer.Close()
	if err := a.registerNode(ctx); err != nil {
		return err
	}
	go a.heartbeat(ctx)
	if err := a.services.start(ctx); err != nil {
		return err
	}

	factory := informers.NewSharedInformerFactoryWithOptions(a.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.cfg.NodeName).String()
		}))
	podInformer := factory.Core().V1().Pods().Informer()
	_, err = podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.podChanged(ctx, obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { a.podChanged(ctx, obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				a.podRemoved(pod)
			}
		},
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	namespaceOnce.Do(func() { namespacesWork = probeNamespaces() })
	if !namespacesWork {
		a.log.Warn("mount namespaces refused: volumes only at $FLOTILLA_CONTAINER_ROOT<mountPath>, Service names do not resolve",
			"node", a.cfg.NodeName)
	}
	a.log.Info("node agent running", "node", a.cfg.NodeName, "site", a.cfg.Site)

	<-ctx.Done()
	a.stopAllPods()
	return nil
}

// podChanged hands the newest version of a pod to its worker, starting one for a new pod.
func (a *Agent) podChanged(ctx context.Context, pod *corev1.Pod) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w, ok := a.workers[pod.UID]
	if !ok {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			// Finished before this agent started (an agent restart): nothing left to run.
			return
		}
		w = newPodWorker(a, pod)
		a.workers[pod.UID] = w
		go w.run(ctx)
	}
	w.update(pod)
}

// podRemoved is the pod object gone from the API (a force delete, or our own final delete).
func (a *Agent) podRemoved(pod *corev1.Pod) {
	a.mu.Lock()
	w, ok := a.workers[pod.UID]
	delete(a.workers, pod.UID)
	a.mu.Unlock()
	if ok {
		w.remove()
	}
}

func (a *Agent) workerByName(namespace, name string) *podWorker {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, w := range a.workers {
		pod := w.currentPod()
		if pod.Namespace == namespace && pod.Name == name {
			return w
		}
	}
	return nil
}

func (a *Agent) allWorkers() []*podWorker {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*podWorker, 0, len(a.workers))
	for _, w := range a.workers {
		out = append(out, w)
	}
	return out
}

// stopAllPods ends every pod's processes when the agent itself stops, in parallel, each with a
// short grace period: the node is going away.
func (a *Agent) stopAllPods() {
	var wg sync.WaitGroup
	for _, w := range a.allWorkers() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.killAll(5 * time.Second)
		}()
	}
	wg.Wait()
}

// rewriteHostsFiles refreshes the hosts file of every pod after a Service change.
func (a *Agent) rewriteHostsFiles() {
	for _, w := range a.allWorkers() {
		w.writeHostsFile()
	}
}
