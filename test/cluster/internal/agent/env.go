package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RootEnv names the variable that tells a container where its filesystem root is. Processes
// share the machine's filesystem, so a volume mounted at /etc/config lives at
// $FLOTILLA_CONTAINER_ROOT/etc/config; command, args, env values and workingDir that name a
// mount path are rewritten to the real folder before the process starts.
const RootEnv = "FLOTILLA_CONTAINER_ROOT"

// imageError is an image without an entry in the image table: the kubelet's ErrImagePull.
type imageError struct{ err error }

func (e *imageError) Error() string { return e.err.Error() }

// command builds the process of one run of the container: argv from image and spec, env from
// the spec, Secrets, ConfigMaps and the downward API, the volume mounts linked into the
// container's root, and stdout/stderr going to the container's log file.
func (c *container) command() (*exec.Cmd, *logFile, error) {
	image, err := c.w.a.cfg.Images.Resolve(c.spec.Image)
	if err != nil {
		return nil, nil, &imageError{err}
	}
	root, err := c.linkMounts()
	if err != nil {
		return nil, nil, err
	}
	env, err := c.environment(root)
	if err != nil {
		return nil, nil, err
	}
	rewrite := c.pathRewriter(root)

	argv := append([]string{}, image.Entrypoint...)
	args := image.Cmd
	if len(c.spec.Command) > 0 {
		argv = expandAll(c.spec.Command, env)
	}
	if len(c.spec.Args) > 0 || len(c.spec.Command) > 0 {
		args = expandAll(c.spec.Args, env)
	}
	argv = append(argv, args...)
	if len(argv) == 0 {
		return nil, nil, fmt.Errorf("container %s: no command: image %q has no entrypoint or cmd and the spec sets none", c.spec.Name, c.spec.Image)
	}
	for i := range argv {
		argv[i] = rewrite(argv[i])
	}
	program, err := lookPath(argv[0], env)
	if err != nil {
		return nil, nil, fmt.Errorf("container %s: exec %q: %w", c.spec.Name, argv[0], err)
	}

	workingDir := image.WorkingDir
	if c.spec.WorkingDir != "" {
		workingDir = c.spec.WorkingDir
	}
	// With a mount namespace, run-container changes into workingDir once the volumes are
	// bound; without one, the rewritten folder is the process's own.
	dir := root
	if !namespacesWork && workingDir != "" {
		dir = rewrite(workingDir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, nil, err
		}
	}

	c.w.mu.Lock()
	restarts := c.restarts
	c.w.mu.Unlock()
	logs, err := openLogFile(c.logPath(restarts))
	if err != nil {
		return nil, nil, err
	}
	cmd, err := c.shimCommand(context.Background(), program, argv, dir, workingDir)
	if err != nil {
		return nil, nil, err
	}
	cmd.Env = flatten(env)
	cmd.Stdout = logs.stream("stdout")
	cmd.Stderr = logs.stream("stderr")
	// Children that keep stdout open must not hold up noticing the container's exit.
	cmd.WaitDelay = 2 * time.Second
	return cmd, logs, nil
}

// shimCommand runs program (argv[0] as the container calls it) through run-container, which
// binds the pod's hosts file and volumes in a fresh mount namespace and enters workingDir.
// dir is where the process starts; SysProcAttr is set by startProcess or isolateProcess.
func (c *container) shimCommand(ctx context.Context, program string, argv []string, dir, workingDir string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"run-container", "--hosts=" + c.w.hostsPath(), "--hostname=" + c.w.currentPod().Name}
	for _, bind := range c.binds() {
		args = append(args, "--bind="+bind)
	}
	if namespacesWork && workingDir != "" {
		args = append(args, "--workdir="+workingDir)
	}
	args = append(args, "--", program)
	cmd := exec.CommandContext(ctx, self, append(args, argv[1:]...)...)
	cmd.Args[0] = argv[0]
	cmd.Dir = dir
	return cmd, nil
}

// linkMounts makes <pod>/containers/<name>/root<mountPath> a link to each mounted volume.
func (c *container) linkMounts() (string, error) {
	root := filepath.Join(c.w.dir, "containers", c.spec.Name, "root")
	// root/root is the container's HOME.
	if err := os.MkdirAll(filepath.Join(root, "root"), 0o755); err != nil {
		return "", err
	}
	c.w.mu.Lock()
	volumes := c.w.volumes
	c.w.mu.Unlock()
	for _, m := range c.spec.VolumeMounts {
		source, ok := volumes[m.Name]
		if !ok {
			return "", fmt.Errorf("container %s: volumeMounts[%s]: no volume of that name", c.spec.Name, m.Name)
		}
		if m.SubPath != "" {
			source = filepath.Join(source, m.SubPath)
			if err := os.MkdirAll(source, 0o755); err != nil {
				return "", err
			}
		}
		target := filepath.Join(root, m.MountPath)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return "", err
		}
		_ = os.Remove(target)
		if err := os.Symlink(source, target); err != nil {
			return "", err
		}
	}
	return root, nil
}

// binds lists "<folder>=<mountPath>" for each volume mount, parents before children, for
// run-container to bind inside the container's mount namespace: there the volume also sits at
// its real mount path, so code that opens fixed paths (the service-account token) works as is.
func (c *container) binds() []string {
	c.w.mu.Lock()
	volumes := c.w.volumes
	c.w.mu.Unlock()
	mounts := append([]corev1.VolumeMount{}, c.spec.VolumeMounts...)
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].MountPath) < len(mounts[j].MountPath) })
	var out []string
	for _, m := range mounts {
		source, ok := volumes[m.Name]
		if !ok {
			continue
		}
		if m.SubPath != "" {
			source = filepath.Join(source, m.SubPath)
		}
		out = append(out, source+"="+filepath.Clean(m.MountPath))
	}
	return out
}

// pathRewriter maps a string naming a mount path (as a whole word, alone or inside a shell
// script) to the container's real folder, where the machine refuses mount namespaces. One pass from left to right, never re-reading what
// it wrote, trying longer mount paths first, so /a/b wins over /a for /a/b/c.
func (c *container) pathRewriter(root string) func(string) string {
	mounts := make([]string, 0, len(c.spec.VolumeMounts))
	for _, m := range c.spec.VolumeMounts {
		mounts = append(mounts, filepath.Clean(m.MountPath))
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	if namespacesWork {
		// Volumes sit at their mount paths inside the container: nothing to rewrite.
		return func(s string) string { return s }
	}
	return func(s string) string {
		var out strings.Builder
		for i := 0; i < len(s); {
			m := mountAt(s, i, mounts)
			if m == "" {
				out.WriteByte(s[i])
				i++
				continue
			}
			out.WriteString(filepath.Join(root, m))
			i += len(m)
		}
		return out.String()
	}
}

// mountAt returns the mount path that starts at s[i] as a whole word, or "".
func mountAt(s string, i int, mounts []string) string {
	if i > 0 && isPathChar(s[i-1]) {
		return ""
	}
	for _, m := range mounts {
		if !strings.HasPrefix(s[i:], m) {
			continue
		}
		end := i + len(m)
		if end == len(s) || s[end] == '/' || (!isPathChar(s[end]) && s[end] != '/') {
			return m
		}
	}
	return ""
}

// isPathChar is a character that may continue a path name; '/' counts too, so /usr/etc is
// not read as /etc.
func isPathChar(b byte) bool {
	return b == '/' || b == '.' || b == '-' || b == '_' ||
		(b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')
}

// envVar keeps the order in which variables were defined, as $(VAR) expansion depends on it.
type envVar struct{ name, value string }

func (c *container) environment(root string) ([]envVar, error) {
	pod := c.w.currentPod()
	c.w.mu.Lock()
	podIP, gpus := c.w.ip, c.w.gpus
	c.w.mu.Unlock()

	// TODO: the <SVC>_SERVICE_HOST/_PORT variables of enableServiceLinks are not set; only the
	// kubernetes Service's are, pointing at the API server itself.
	env := []envVar{
		{"PATH", os.Getenv("PATH")},
		{"HOSTNAME", pod.Name},
		{"HOME", filepath.Join(root, "root")},
		{RootEnv, root},
		{"KUBERNETES_SERVICE_HOST", c.w.a.apiserverHost},
		{"KUBERNETES_SERVICE_PORT", c.w.a.apiserverPort},
		{"KUBERNETES_SERVICE_PORT_HTTPS", c.w.a.apiserverPort},
		{"KUBERNETES_PORT", fmt.Sprintf("tcp://%s:%s", c.w.a.apiserverHost, c.w.a.apiserverPort)},
	}
	if gpus != "" {
		env = append(env, envVar{"NVIDIA_VISIBLE_DEVICES", gpus})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, from := range c.spec.EnvFrom {
		values, err := c.w.envFromSource(ctx, pod, from)
		if err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(values))
		for k := range values {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			env = set(env, from.Prefix+k, values[k])
		}
	}
	for _, v := range c.spec.Env {
		value := v.Value
		if v.ValueFrom != nil {
			resolved, err := c.w.envValueFrom(ctx, pod, c.spec, podIP, v)
			if err != nil {
				return nil, err
			}
			value = resolved
		} else {
			value = expand(value, env)
		}
		env = set(env, v.Name, value)
	}
	rewrite := c.pathRewriter(root)
	for i := range env {
		env[i].value = rewrite(env[i].value)
	}
	return env, nil
}

func (w *podWorker) envFromSource(ctx context.Context, pod *corev1.Pod, from corev1.EnvFromSource) (map[string]string, error) {
	switch {
	case from.ConfigMapRef != nil:
		cm, err := w.a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
		if err != nil {
			if optional(from.ConfigMapRef.Optional) {
				return nil, nil
			}
			return nil, fmt.Errorf("envFrom configMapRef %s: %w", from.ConfigMapRef.Name, err)
		}
		return cm.Data, nil
	case from.SecretRef != nil:
		secret, err := w.a.client.CoreV1().Secrets(pod.Namespace).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
		if err != nil {
			if optional(from.SecretRef.Optional) {
				return nil, nil
			}
			return nil, fmt.Errorf("envFrom secretRef %s: %w", from.SecretRef.Name, err)
		}
		out := map[string]string{}
		for k, v := range secret.Data {
			out[k] = string(v)
		}
		return out, nil
	}
	return nil, nil
}

func (w *podWorker) envValueFrom(ctx context.Context, pod *corev1.Pod, spec corev1.Container, podIP string, v corev1.EnvVar) (string, error) {
	from := v.ValueFrom
	switch {
	case from.FieldRef != nil:
		value, err := fieldValue(pod, from.FieldRef.FieldPath, podIP)
		if err != nil {
			return "", fmt.Errorf("env %s: %w", v.Name, err)
		}
		return value, nil
	case from.ResourceFieldRef != nil:
		return resourceValue(spec, from.ResourceFieldRef)
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		cm, err := w.a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			if value, ok := cm.Data[ref.Key]; ok {
				return value, nil
			}
			err = fmt.Errorf("key %q not found", ref.Key)
		}
		if optional(ref.Optional) {
			return "", nil
		}
		return "", fmt.Errorf("env %s: configMapKeyRef %s: %w", v.Name, ref.Name, err)
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		secret, err := w.a.client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			if value, ok := secret.Data[ref.Key]; ok {
				return string(value), nil
			}
			err = fmt.Errorf("key %q not found", ref.Key)
		}
		if optional(ref.Optional) {
			return "", nil
		}
		return "", fmt.Errorf("env %s: secretKeyRef %s: %w", v.Name, ref.Name, err)
	}
	return "", fmt.Errorf("env %s: valueFrom: no source set", v.Name)
}

// fieldValue reads a downward-API field of the pod.
func fieldValue(pod *corev1.Pod, path, podIP string) (string, error) {
	if key, ok := bracketKey(path, "metadata.labels"); ok {
		return pod.Labels[key], nil
	}
	if key, ok := bracketKey(path, "metadata.annotations"); ok {
		return pod.Annotations[key], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return "127.0.0.1", nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	}
	return "", fmt.Errorf("fieldRef.fieldPath: unsupported field %q", path)
}

func bracketKey(path, prefix string) (string, bool) {
	if !strings.HasPrefix(path, prefix+"['") || !strings.HasSuffix(path, "']") {
		return "", false
	}
	return path[len(prefix)+2 : len(path)-2], true
}

// resourceValue is a container's request or limit divided by the divisor, rounded up.
func resourceValue(spec corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", fmt.Errorf("resourceFieldRef.resource: want limits.<name> or requests.<name>, got %q", ref.Resource)
	}
	list := spec.Resources.Limits
	if kind == "requests" {
		list = spec.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		return "0", nil
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	value := (q.MilliValue() + divisor.MilliValue() - 1) / divisor.MilliValue()
	return fmt.Sprint(value), nil
}

func optional(b *bool) bool { return b != nil && *b }

func set(env []envVar, name, value string) []envVar {
	for i := range env {
		if env[i].name == name {
			env[i].value = value
			return env
		}
	}
	return append(env, envVar{name, value})
}

func flatten(env []envVar) []string {
	out := make([]string, len(env))
	for i, v := range env {
		out[i] = v.name + "=" + v.value
	}
	return out
}

var refPattern = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)`)

// expand replaces $(NAME) with the variable's value as the kubelet does: unknown references
// stay as written and $$ is a literal $.
func expand(s string, env []envVar) string {
	return refPattern.ReplaceAllStringFunc(s, func(ref string) string {
		if ref == "$$" {
			return "$"
		}
		name := ref[2 : len(ref)-1]
		for _, v := range env {
			if v.name == name {
				return v.value
			}
		}
		return ref
	})
}

func expandAll(values []string, env []envVar) []string {
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = expand(v, env)
	}
	return out
}

// lookPath finds a program the way the container's PATH would.
func lookPath(program string, env []envVar) (string, error) {
	if strings.Contains(program, "/") {
		if _, err := os.Stat(program); err != nil {
			return "", err
		}
		return program, nil
	}
	for _, v := range env {
		if v.name != "PATH" {
			continue
		}
		for _, dir := range filepath.SplitList(v.value) {
			candidate := filepath.Join(dir, program)
			if info, err := os.Stat(candidate); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
				return candidate, nil
			}
		}
	}
	return "", fmt.Errorf("executable file not found in $PATH")
}
