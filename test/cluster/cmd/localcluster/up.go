package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"flotilla.dev/test/cluster/internal/pki"
)

// startTimeout bounds the whole of `up`; a cold API server is ready in well under a minute.
const startTimeout = 3 * time.Minute

// serviceCIDR holds ClusterIPs. They are allocated but nothing routes them: pods reach
// Services through the names the node agents write into each pod's hosts file.
const serviceCIDR = "10.96.0.0/16"

// dnsUser is the identity node agents resolve Service names with.
const dnsUser = "system:flotilla:cluster-dns"

// site is one entry of sites.yaml.
type site struct {
	Name   string `json:"name"`
	Region string `json:"region"`
	Zone   string `json:"zone"`
	CPU    string `json:"cpu"`
	Memory string `json:"memory"`
	GPUs   int    `json:"gpus"`
}

// process is a started daemon, as state.json records it for `down`.
type process struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
}

// clusterState is state.json: what is running and where to reach it.
type clusterState struct {
	Server    string    `json:"server"`
	Processes []process `json:"processes"`
}

func up(ctx context.Context, l layout) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()

	if st, err := readState(l); err == nil && alive(st) {
		fmt.Printf("cluster already running at %s\nexport KUBECONFIG=%s\n", st.Server, l.adminKubeconfig())
		return nil
	}
	// A state file whose processes died (a crash, a reboot) is swept before starting anew.
	if err := down(l); err != nil {
		return err
	}
	sites, err := readSites(filepath.Join(l.cluster, "sites.yaml"))
	if err != nil {
		return err
	}
	for _, dir := range []string{l.pki(), l.logs()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if err := issueCertificates(l, sites); err != nil {
		return err
	}

	ports, err := freePorts(4 + 2*len(sites))
	if err != nil {
		return err
	}
	etcdPort, peerPort, apiPort, kcmPort := ports[0], ports[1], ports[2], ports[3]
	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	st := &clusterState{Server: server}
	if err := writeKubeconfigs(l, server, sites); err != nil {
		return err
	}

	start := time.Now()
	if err := st.spawn(l, "etcd", etcdArgs(l, etcdPort, peerPort)); err != nil {
		return err
	}
	if err := st.waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/health", etcdPort), nil); err != nil {
		return fmt.Errorf("etcd did not become healthy (see %s): %w", l.logs(), err)
	}
	if err := st.spawn(l, "kube-apiserver", apiserverArgs(l, apiPort, etcdPort)); err != nil {
		return err
	}
	adminTLS, err := clientTLS(l, "admin")
	if err != nil {
		return err
	}
	if err := st.waitHTTP(ctx, server+"/readyz", adminTLS); err != nil {
		return fmt.Errorf("kube-apiserver did not become ready (see %s): %w", l.logs(), err)
	}
	if err := grantDNSRole(ctx, l); err != nil {
		return err
	}
	if err := st.spawn(l, "kube-controller-manager", controllerManagerArgs(l, kcmPort)); err != nil {
		return err
	}
	if err := st.spawn(l, "kube-scheduler", schedulerArgs(l)); err != nil {
		return err
	}
	for i, s := range sites {
		args := nodeAgentArgs(l, s, i, ports[4+2*i])
		if err := st.spawn(l, "node-"+s.Name, args); err != nil {
			return err
		}
	}

	if err := st.waitReady(ctx, l, sites); err != nil {
		return fmt.Errorf("cluster did not become ready (see %s): %w", l.logs(), err)
	}
	fmt.Printf("cluster ready at %s in %s\nexport KUBECONFIG=%s\n",
		server, time.Since(start).Round(time.Millisecond), l.adminKubeconfig())
	return nil
}

func readSites(path string) ([]site, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Sites []site `json:"sites"`
	}
	if err := yaml.UnmarshalStrict(raw, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Sites) == 0 || len(doc.Sites) > 200 {
		return nil, fmt.Errorf("%s: sites: must list 1 to 200 sites, got %d", path, len(doc.Sites))
	}
	return doc.Sites, nil
}

func nodeName(s site) string { return s.Name + "-node" }

func issueCertificates(l layout, sites []site) error {
	dir := l.pki()
	ca, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		return err
	}
	if err := pki.EnsureServiceAccountKey(dir); err != nil {
		return err
	}
	loopback := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")}
	certs := map[string]pki.CertSpec{
		"apiserver": {CommonName: "kube-apiserver", Server: true, IPs: loopback, DNSNames: []string{
			"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		}},
		"admin":                   {CommonName: "kubernetes-admin", Organization: []string{"system:masters"}, Client: true},
		"kube-controller-manager": {CommonName: "system:kube-controller-manager", Client: true},
		"kube-scheduler":          {CommonName: "system:kube-scheduler", Client: true},
		"apiserver-kubelet-client": {
			CommonName: "kube-apiserver-kubelet-client", Client: true,
		},
		// The agents resolve Service names from Services and Pods of every namespace, which
		// the Node authorizer does not let a node read; this identity gets its own role.
		"cluster-dns": {CommonName: dnsUser, Client: true},
	}
	for _, s := range sites {
		name := nodeName(s)
		certs["node-"+s.Name] = pki.CertSpec{
			CommonName: "system:node:" + name, Organization: []string{"system:nodes"}, Client: true,
		}
		certs["kubelet-"+s.Name] = pki.CertSpec{
			CommonName: name, Server: true, IPs: loopback[:1], DNSNames: []string{name},
		}
	}
	for name, spec := range certs {
		if err := ca.Issue(dir, name, spec); err != nil {
			return err
		}
	}
	return nil
}

// writeKubeconfigs writes one kubeconfig per client identity, each with its certificate.
func writeKubeconfigs(l layout, server string, sites []site) error {
	names := []string{"admin", "kube-controller-manager", "kube-scheduler", "cluster-dns"}
	for _, s := range sites {
		names = append(names, "node-"+s.Name)
	}
	for _, name := range names {
		path := filepath.Join(l.run, name+".kubeconfig")
		if err := writeKubeconfig(l, path, server, name); err != nil {
			return err
		}
	}
	return nil
}

func writeKubeconfig(l layout, path, server, cert string) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: flotilla-local
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: flotilla-local
  context:
    cluster: flotilla-local
    user: %s
    namespace: default
current-context: flotilla-local
`, server, filepath.Join(l.pki(), "ca.crt"), cert,
		filepath.Join(l.pki(), cert+".crt"), filepath.Join(l.pki(), cert+".key"), cert)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

func etcdArgs(l layout, port, peerPort int) []string {
	client := fmt.Sprintf("http://127.0.0.1:%d", port)
	peer := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	return []string{
		"--name=flotilla-local",
		"--data-dir=" + filepath.Join(l.run, "etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=flotilla-local=" + peer,
		// The cluster is thrown away on `down`; skipping fsync keeps writes fast on slow disks.
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
}

func apiserverArgs(l layout, port, etcdPort int) []string {
	p := func(name string) string { return filepath.Join(l.pki(), name) }
	return []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// The endpoint reconciler refuses a loopback address for the kubernetes Service; pods
		// reach the API server through KUBERNETES_SERVICE_HOST/PORT instead.
		"--endpoint-reconciler-type=none",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Join(l.run, "apiserver"),
		"--tls-cert-file=" + p("apiserver.crt"),
		"--tls-private-key-file=" + p("apiserver.key"),
		"--client-ca-file=" + p("ca.crt"),
		"--authorization-mode=Node,RBAC",
		// Added to the default plugin set, as kubeadm does: nodes may only edit themselves.
		"--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p("sa.pub"),
		"--service-account-signing-key-file=" + p("sa.key"),
		"--service-cluster-ip-range=" + serviceCIDR,
		"--kubelet-client-certificate=" + p("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + p("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + p("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true",
		"--profiling=false",
	}
}

func controllerManagerArgs(l layout, port int) []string {
	p := func(name string) string { return filepath.Join(l.pki(), name) }
	kubeconfig := filepath.Join(l.run, "kube-controller-manager.kubeconfig")
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--leader-elect=false",
		"--cluster-name=flotilla-local",
		"--service-cluster-ip-range=" + serviceCIDR,
		"--service-account-private-key-file=" + p("sa.key"),
		"--root-ca-file=" + p("ca.crt"),
		"--cluster-signing-cert-file=" + p("ca.crt"),
		"--cluster-signing-key-file=" + p("ca.key"),
		"--use-service-account-credentials=true",
		// Pod IPs are loopback addresses, which Endpoints and EndpointSlice validation
		// refuses; these controllers would only retry and warn. Agents resolve Services.
		"--controllers=*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller",
		"--profiling=false",
	}
}

func schedulerArgs(l layout) []string {
	kubeconfig := filepath.Join(l.run, "kube-scheduler.kubeconfig")
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1",
		// The scheduler serves only health and metrics; nothing here reads them.
		"--secure-port=0",
		"--leader-elect=false",
		"--profiling=false",
	}
}

func nodeAgentArgs(l layout, s site, index, port int) []string {
	return []string{
		"--kubeconfig=" + filepath.Join(l.run, "node-"+s.Name+".kubeconfig"),
		"--services-kubeconfig=" + filepath.Join(l.run, "cluster-dns.kubeconfig"),
		"--node-name=" + nodeName(s),
		"--site=" + s.Name,
		"--region=" + s.Region,
		"--zone=" + s.Zone,
		"--cpu=" + s.CPU,
		"--memory=" + s.Memory,
		"--gpus=" + strconv.Itoa(s.GPUs),
		// Each node hands out pod IPs from its own 127.0.<10+index>.0/24.
		fmt.Sprintf("--pod-subnet=127.0.%d.0/24", 10+index),
		fmt.Sprintf("--port=%d", port),
		"--tls-cert-file=" + filepath.Join(l.pki(), "kubelet-"+s.Name+".crt"),
		"--tls-private-key-file=" + filepath.Join(l.pki(), "kubelet-"+s.Name+".key"),
		"--client-ca-file=" + filepath.Join(l.pki(), "ca.crt"),
		"--images=" + filepath.Join(l.cluster, "images.yaml"),
		"--repo=" + l.repo,
		"--root-dir=" + filepath.Join(l.run, "nodes", nodeName(s)),
	}
}

// spawn starts a daemon in its own session so it outlives this command, logging to a file.
func (st *clusterState) spawn(l layout, name string, args []string) error {
	binary := name
	if len(name) > 5 && name[:5] == "node-" {
		binary = "node-agent"
	}
	logFile, err := os.Create(filepath.Join(l.logs(), name+".log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(filepath.Join(l.bin, binary), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	st.Processes = append(st.Processes, process{Name: name, PID: cmd.Process.Pid})
	// Recorded after every start, so `down` finds whatever did start if a later step fails.
	if err := writeState(l, st); err != nil {
		return err
	}
	return cmd.Process.Release()
}

func writeState(l layout, st *clusterState) error {
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(l.state(), raw, 0o644)
}

func readState(l layout) (*clusterState, error) {
	raw, err := os.ReadFile(l.state())
	if err != nil {
		return nil, err
	}
	var st clusterState
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", l.state(), err)
	}
	return &st, nil
}

// alive reports whether every recorded process still runs.
func alive(st *clusterState) bool {
	if len(st.Processes) == 0 {
		return false
	}
	for _, p := range st.Processes {
		if syscall.Kill(p.PID, 0) != nil {
			return false
		}
	}
	return true
}

// deadProcess names a started process that is no longer running, or returns "".
func (st *clusterState) deadProcess() string {
	for _, p := range st.Processes {
		if !running(p.PID) {
			return p.Name
		}
	}
	return ""
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}()
	// All are held open together so no two of them are the same port.
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func clientTLS(l layout, name string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(l.pki(), name+".crt"), filepath.Join(l.pki(), name+".key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(l.pki(), "ca.crt"))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots}, nil
}

// waitHTTP polls url until it answers 200, giving up early when a started process died.
func (st *clusterState) waitHTTP(ctx context.Context, url string, tlsConfig *tls.Config) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	return st.poll(ctx, 200*time.Millisecond, func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: status %d", url, resp.StatusCode)
		}
		return nil
	})
}

// poll calls check every interval until it returns nil. It gives up with check's last error
// when ctx ends, and at once when a process the cluster started has died, since waiting
// longer could not help.
func (st *clusterState) poll(ctx context.Context, interval time.Duration, check func() error) error {
	for {
		last := check()
		if last == nil {
			return nil
		}
		if dead := st.deadProcess(); dead != "" {
			return fmt.Errorf("%s exited", dead)
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(interval):
		}
	}
}

// waitReady waits for what a first `kubectl apply` of a pod needs: every node Ready and
// schedulable, and the default ServiceAccount and root CA ConfigMap that pods mount.
func (st *clusterState) waitReady(ctx context.Context, l layout, sites []site) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.adminKubeconfig())
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return st.poll(ctx, 300*time.Millisecond, func() error {
		return clusterReady(ctx, client, sites)
	})
}

func clusterReady(ctx context.Context, client kubernetes.Interface, sites []site) error {
	for _, s := range sites {
		node, err := client.CoreV1().Nodes().Get(ctx, nodeName(s), metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !nodeReady(node) {
			return fmt.Errorf("node %s: not Ready yet", node.Name)
		}
		for _, taint := range node.Spec.Taints {
			if taint.Effect == corev1.TaintEffectNoSchedule {
				return fmt.Errorf("node %s: still tainted %s", node.Name, taint.Key)
			}
		}
	}
	if _, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
		return err
	}
	_, err := client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return errors.New("configmap default/kube-root-ca.crt: not published yet")
	}
	return err
}

func nodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// grantDNSRole lets dnsUser read Services and Pods everywhere, as CoreDNS's role does.
func grantDNSRole(ctx context.Context, l layout) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.adminKubeconfig())
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "flotilla:cluster-dns"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""},
			Resources: []string{"services", "pods", "namespaces"},
			Verbs:     []string{"get", "list", "watch"},
		}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "flotilla:cluster-dns"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: dnsUser}},
	}
	for {
		_, err = client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			_, err = client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
		}
		if err == nil || apierrors.IsAlreadyExists(err) {
			return nil
		}
		// Right after /readyz the RBAC bootstrap may still be settling; retry until the deadline.
		select {
		case <-ctx.Done():
			return fmt.Errorf("create cluster-dns role: %w", err)
		case <-time.After(300 * time.Millisecond):
		}
	}
}
