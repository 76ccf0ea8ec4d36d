package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probe runs a readiness or liveness probe while the container runs and reports each verdict
// once the success or failure threshold is reached, as the kubelet's prober does.
func (c *container) probe(ctx context.Context, p *corev1.Probe, report func(ok bool)) {
	if p == nil {
		return
	}
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	successes, failures := 0, 0
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(p.InitialDelaySeconds) * time.Second):
	}
	for {
		err := c.probeOnce(ctx, p, timeout)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			successes, failures = successes+1, 0
			if successes >= int(max(p.SuccessThreshold, 1)) {
				report(true)
			}
		} else {
			successes, failures = 0, failures+1
			if failures >= int(max(p.FailureThreshold, 1)) {
				report(false)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(period):
		}
	}
}

func (c *container) probeOnce(ctx context.Context, p *corev1.Probe, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c.w.mu.Lock()
	podIP := c.w.ip
	c.w.mu.Unlock()
	switch {
	case p.TCPSocket != nil:
		port, err := c.resolvePort(p.TCPSocket.Port)
		if err != nil {
			return err
		}
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(podIP, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case p.HTTPGet != nil:
		port, err := c.resolvePort(p.HTTPGet.Port)
		if err != nil {
			return err
		}
		scheme := "http"
		if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		url := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(podIP, strconv.Itoa(port)), p.HTTPGet.Path)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := probeClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("%s: status %d", url, resp.StatusCode)
		}
		return nil
	case p.Exec != nil:
		cmd, err := c.probeCommand(ctx, p.Exec.Command)
		if err != nil {
			return err
		}
		return cmd.Run()
	}
	return fmt.Errorf("probe: no handler set")
}

// probeCommand builds an exec probe's process as the container's own: same environment,
// volumes, hosts file and working folder.
func (c *container) probeCommand(ctx context.Context, argv []string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("exec probe: empty command")
	}
	root, err := c.linkMounts()
	if err != nil {
		return nil, err
	}
	env, err := c.environment(root)
	if err != nil {
		return nil, err
	}
	rewrite := c.pathRewriter(root)
	args := make([]string, len(argv))
	for i, a := range argv {
		args[i] = rewrite(expand(a, env))
	}
	program, err := lookPath(args[0], env)
	if err != nil {
		return nil, err
	}
	cmd, err := c.shimCommand(ctx, program, args, root, c.spec.WorkingDir)
	if err != nil {
		return nil, err
	}
	cmd.Env = flatten(env)
	isolateProcess(cmd)
	return cmd, nil
}

var probeClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func (c *container) resolvePort(port intstr.IntOrString) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, p := range c.spec.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("probe port %q: no container port of that name", port.StrVal)
}
