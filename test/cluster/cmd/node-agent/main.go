// Command node-agent is the local cluster's stand-in for the kubelet: one per site, it
// registers a Node and runs the pods bound to it as local processes (see internal/agent).
//
// `node-agent run-container` is the first program of every container: started in fresh mount
// and UTS namespaces, it bind-mounts the pod's hosts file on /etc/hosts, so Service names
// resolve for any program (getent, Node.js, curl), sets the pod's hostname, then execs the
// container's program.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"k8s.io/apimachinery/pkg/api/resource"

	"flotilla.dev/test/cluster/internal/agent"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "run-container" {
		runContainer(os.Args[2:])
		return
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "node-agent:", err)
		os.Exit(2)
	}
	a, err := agent.New(cfg, log)
	if err != nil {
		log.Error("node agent failed to start", "error", err.Error())
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := a.Run(ctx); err != nil {
		log.Error("node agent stopped", "error", err.Error())
		os.Exit(1)
	}
	log.Info("node agent stopped", "node", cfg.NodeName)
}

func parseFlags(args []string) (agent.Config, error) {
	fs := flag.NewFlagSet("node-agent", flag.ContinueOnError)
	var cfg agent.Config
	var cpu, memory, subnet, images, repo string
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig with the node's identity (system:node:<name>)")
	fs.StringVar(&cfg.ServicesKubeconfig, "services-kubeconfig", "", "kubeconfig allowed to watch EndpointSlices")
	fs.StringVar(&cfg.NodeName, "node-name", "", "name of the Node to register")
	fs.StringVar(&cfg.Site, "site", "", "value of the flotilla.dev/site label")
	fs.StringVar(&cfg.Region, "region", "local", "topology.kubernetes.io/region label")
	fs.StringVar(&cfg.Zone, "zone", "", "topology.kubernetes.io/zone label")
	fs.StringVar(&cpu, "cpu", "4", "cpu capacity")
	fs.StringVar(&memory, "memory", "8Gi", "memory capacity")
	fs.Int64Var(&cfg.GPUs, "gpus", 0, "nvidia.com/gpu capacity")
	fs.StringVar(&subnet, "pod-subnet", "", "loopback subnet pod IPs come from, e.g. 127.0.10.0/24")
	fs.IntVar(&cfg.Port, "port", 0, "HTTPS port of the container-log endpoint")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert-file", "", "serving certificate of the log endpoint")
	fs.StringVar(&cfg.TLSKeyFile, "tls-private-key-file", "", "key of the serving certificate")
	fs.StringVar(&cfg.ClientCAFile, "client-ca-file", "", "CA that signs the API server's client certificate")
	fs.StringVar(&images, "images", "", "image table (images.yaml)")
	fs.StringVar(&repo, "repo", "", "repository root, substituted for <repo> in the image table")
	fs.StringVar(&cfg.RootDir, "root-dir", "", "folder for the node's pods")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	required := map[string]string{
		"--kubeconfig": cfg.Kubeconfig, "--services-kubeconfig": cfg.ServicesKubeconfig,
		"--node-name": cfg.NodeName, "--site": cfg.Site, "--pod-subnet": subnet,
		"--tls-cert-file": cfg.TLSCertFile, "--tls-private-key-file": cfg.TLSKeyFile,
		"--client-ca-file": cfg.ClientCAFile, "--images": images, "--root-dir": cfg.RootDir,
	}
	for name, value := range required {
		if value == "" {
			return cfg, fmt.Errorf("%s: required", name)
		}
	}
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return cfg, fmt.Errorf("--port: want 1-65535, got %d", cfg.Port)
	}
	var err error
	if cfg.CPU, err = resource.ParseQuantity(cpu); err != nil {
		return cfg, fmt.Errorf("--cpu: want a quantity, got %q", cpu)
	}
	if cfg.Memory, err = resource.ParseQuantity(memory); err != nil {
		return cfg, fmt.Errorf("--memory: want a quantity, got %q", memory)
	}
	if cfg.GPUs < 0 {
		return cfg, fmt.Errorf("--gpus: must be >= 0, got %d", cfg.GPUs)
	}
	ip, ipNet, err := net.ParseCIDR(subnet)
	if err != nil || !ip.IsLoopback() || ip.To4() == nil {
		return cfg, fmt.Errorf("--pod-subnet: want an IPv4 loopback CIDR like 127.0.10.0/24, got %q", subnet)
	}
	cfg.PodSubnet = ipNet
	if cfg.Images, err = agent.LoadImageTable(images, repo); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// runContainer is argv: run-container --hosts=<file> --hostname=<name> -- <program> <args...>.
// Errors go to stderr, which is the container's log.
func runContainer(args []string) {
	fs := flag.NewFlagSet("run-container", flag.ContinueOnError)
	hosts := fs.String("hosts", "", "hosts file to mount on /etc/hosts")
	hostname := fs.String("hostname", "", "hostname of the pod")
	workdir := fs.String("workdir", "", "working folder, entered after the volumes are bound")
	var binds []string
	fs.Func("bind", "FOLDER=MOUNTPATH to bind in the container (repeatable)", func(v string) error {
		binds = append(binds, v)
		return nil
	})
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "run-container: usage: run-container --hosts=FILE --hostname=NAME [--bind=FOLDER=PATH...] -- PROGRAM [ARGS...]")
		os.Exit(127)
	}
	if os.Getenv("FLOTILLA_NO_NAMESPACES") == "" {
		isolate(*hosts, *hostname, binds)
	}
	if *workdir != "" {
		// As a container runtime does, a missing working folder is created.
		_ = os.MkdirAll(*workdir, 0o755)
		if err := os.Chdir(*workdir); err != nil {
			fmt.Fprintf(os.Stderr, "run-container: workingDir %s: %v\n", *workdir, err)
			os.Exit(128)
		}
	}
	os.Unsetenv("FLOTILLA_NO_NAMESPACES")
	argv := fs.Args()
	// argv[0] is the resolved program; the container sees the name its spec used, kept by the
	// agent in this process's own argv[0].
	program := argv[0]
	argv[0] = os.Args[0]
	err := syscall.Exec(program, argv, os.Environ())
	fmt.Fprintf(os.Stderr, "run-container: exec %s: %v\n", program, err)
	os.Exit(127)
}

// oPath is Linux's O_PATH, which package syscall does not name: a handle that only locates.
const oPath = 0x200000

// isolate makes this process's mounts private, so its bind mounts stay inside the container.
// Every source is opened before the first mount: a volume bound on /work would otherwise hide
// sources that live under /work.
func isolate(hosts, hostname string, binds []string) {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		fmt.Fprintf(os.Stderr, "run-container: mount namespace: %v; Service names will not resolve\n", err)
		return
	}
	if hostname != "" {
		_ = syscall.Sethostname([]byte(hostname))
	}
	if hosts != "" {
		binds = append([]string{hosts + "=/etc/hosts"}, binds...)
	}
	type pending struct {
		source, target string
		fd             int
		dir            bool
	}
	var mounts []pending
	for _, bind := range binds {
		source, target, _ := strings.Cut(bind, "=")
		fd, err := syscall.Open(source, oPath|syscall.O_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintf(os.Stderr, "run-container: bind %s on %s: %v\n", source, target, err)
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			fmt.Fprintf(os.Stderr, "run-container: bind %s on %s: %v\n", source, target, err)
			continue
		}
		mounts = append(mounts, pending{source, target, fd, st.Mode&syscall.S_IFMT == syscall.S_IFDIR})
	}
	for _, m := range mounts {
		if err := bindMount(fmt.Sprintf("/proc/self/fd/%d", m.fd), m.target, m.dir); err != nil {
			// The volume is still at $FLOTILLA_CONTAINER_ROOT<mountPath>.
			fmt.Fprintf(os.Stderr, "run-container: bind %s on %s: %v\n", m.source, m.target, err)
		}
		syscall.Close(m.fd)
	}
}

// bindMount mounts source on target, creating an empty mount point when target is missing.
// TODO: a missing mount point is created on the machine's own filesystem (an empty folder or
// file); it stays after the pod ends.
func bindMount(source, target string, dir bool) error {
	if dir {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
	} else if _, err := os.Stat(target); err != nil {
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		f.Close()
	}
	return syscall.Mount(source, target, "", syscall.MS_BIND|syscall.MS_REC, "")
}
