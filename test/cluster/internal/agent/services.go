package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// clusterDomain is the DNS suffix of Service names, as in a default cluster.
const clusterDomain = "cluster.local"

// serviceHosts turns the cluster's EndpointSlices into hosts-file lines: every Service name
// resolves to the pod IPs of its ready endpoints. There is no kube-proxy, so a ClusterIP would
// lead nowhere; resolving to endpoints is what a headless Service does in any cluster.
type serviceHosts struct {
	client  kubernetes.Interface
	changed func()
	log     *slog.Logger

	mu     sync.Mutex
	slices cache.Store
}

func newServiceHosts(client kubernetes.Interface, changed func(), log *slog.Logger) *serviceHosts {
	return &serviceHosts{client: client, changed: changed, log: log}
}

func (s *serviceHosts) start(ctx context.Context) error {
	factory := informers.NewSharedInformerFactory(s.client, 0)
	informer := factory.Discovery().V1().EndpointSlices().Informer()
	notify := func(any) { s.changed() }
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, obj any) { notify(obj) },
		DeleteFunc: notify,
	}); err != nil {
		return err
	}
	s.mu.Lock()
	s.slices = informer.GetStore()
	s.mu.Unlock()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return fmt.Errorf("endpointslices: cache did not sync")
	}
	return nil
}

// hostsLines lists "<ip> <names...>" for every ready endpoint of every Service. Names of
// Services in the pod's own namespace also appear without the namespace, as the pod's DNS
// search path would resolve them.
func (s *serviceHosts) hostsLines(podNamespace string) []string {
	s.mu.Lock()
	store := s.slices
	s.mu.Unlock()
	if store == nil {
		return nil
	}
	var lines []string
	for _, obj := range store.List() {
		slice := obj.(*discoveryv1.EndpointSlice)
		service := slice.Labels[discoveryv1.LabelServiceName]
		if service == "" {
			continue
		}
		names := []string{
			fmt.Sprintf("%s.%s.svc.%s", service, slice.Namespace, clusterDomain),
			fmt.Sprintf("%s.%s.svc", service, slice.Namespace),
			fmt.Sprintf("%s.%s", service, slice.Namespace),
		}
		if slice.Namespace == podNamespace {
			names = append(names, service)
		}
		for _, ep := range slice.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, addr := range ep.Addresses {
				lines = append(lines, addr+" "+strings.Join(names, " "))
			}
		}
	}
	sort.Strings(lines)
	return lines
}
