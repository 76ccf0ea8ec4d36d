package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// clusterDomain is the DNS suffix of Service names, as in a default cluster.
const clusterDomain = "cluster.local"

// serviceHosts turns the cluster's Services into hosts-file lines: every Service name resolves
// to the IPs of the ready pods its selector picks. Pod IPs here are loopback addresses, which
// EndpointSlice validation refuses, so the agent matches selectors itself, as a cluster DNS
// server with its own read access to Services and Pods would. There is no kube-proxy either,
// so a ClusterIP would lead nowhere: names resolve as for a headless Service.
type serviceHosts struct {
	client   kubernetes.Interface
	changed  func()
	log      *slog.Logger
	services corelisters.ServiceLister
	pods     corelisters.PodLister
}

func newServiceHosts(client kubernetes.Interface, changed func(), log *slog.Logger) *serviceHosts {
	return &serviceHosts{client: client, changed: changed, log: log}
}

func (s *serviceHosts) start(ctx context.Context) error {
	factory := informers.NewSharedInformerFactory(s.client, 0)
	services := factory.Core().V1().Services()
	pods := factory.Core().V1().Pods()
	notify := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.changed() },
		UpdateFunc: func(_, _ any) { s.changed() },
		DeleteFunc: func(any) { s.changed() },
	}
	for _, informer := range []cache.SharedIndexInformer{services.Informer(), pods.Informer()} {
		if _, err := informer.AddEventHandler(notify); err != nil {
			return err
		}
	}
	s.services, s.pods = services.Lister(), pods.Lister()
	factory.Start(ctx.Done())
	for kind, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("%v: cache did not sync", kind)
		}
	}
	return nil
}

// hostsLines lists "<ip> <names...>" for every ready pod behind every Service. Names of
// Services in the pod's own namespace also appear without the namespace, as the pod's DNS
// search path would resolve them.
func (s *serviceHosts) hostsLines(podNamespace string) []string {
	if s.services == nil {
		return nil
	}
	services, err := s.services.List(labels.Everything())
	if err != nil {
		return nil
	}
	var lines []string
	for _, svc := range services {
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		names := []string{
			fmt.Sprintf("%s.%s.svc.%s", svc.Name, svc.Namespace, clusterDomain),
			fmt.Sprintf("%s.%s.svc", svc.Name, svc.Namespace),
			fmt.Sprintf("%s.%s", svc.Name, svc.Namespace),
		}
		if svc.Namespace == podNamespace {
			names = append(names, svc.Name)
		}
		pods, err := s.pods.Pods(svc.Namespace).List(labels.SelectorFromSet(svc.Spec.Selector))
		if err != nil {
			continue
		}
		for _, pod := range pods {
			if pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
				continue
			}
			if !svc.Spec.PublishNotReadyAddresses && !podReady(pod) {
				continue
			}
			lines = append(lines, pod.Status.PodIP+" "+strings.Join(names, " "))
		}
	}
	sort.Strings(lines)
	return lines
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
