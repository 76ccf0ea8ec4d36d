package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// defaultTokenSeconds is the lifetime the kubelet asks for when a projected token sets none.
const defaultTokenSeconds = 3607

// prepareVolumes writes every volume of the pod into <pod>/volumes/<name> and returns where
// each one lives. hostPath volumes are the host folder itself.
//
// TODO: Secret, ConfigMap and token volumes are written once, when the pod starts; later
// changes (and token expiry after the API server's extended lifetime) do not reach the pod.
func (w *podWorker) prepareVolumes(ctx context.Context, pod *corev1.Pod) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(w.dir, "volumes", v.Name)
		var err error
		switch {
		case v.HostPath != nil:
			dir = v.HostPath.Path
			err = prepareHostPath(v.HostPath)
		case v.EmptyDir != nil:
			err = os.MkdirAll(dir, 0o777)
		case v.Secret != nil:
			err = w.writeSecret(ctx, pod, dir, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, v.Secret.DefaultMode)
		case v.ConfigMap != nil:
			err = w.writeConfigMap(ctx, pod, dir, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, v.ConfigMap.DefaultMode)
		case v.DownwardAPI != nil:
			err = w.writeDownwardAPI(pod, dir, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
		case v.Projected != nil:
			err = w.writeProjected(ctx, pod, dir, v.Projected)
		default:
			err = fmt.Errorf("volume %s: only hostPath, emptyDir, secret, configMap, downwardAPI and projected volumes run on the local node agent", v.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		out[v.Name] = dir
	}
	return out, nil
}

func prepareHostPath(hp *corev1.HostPathVolumeSource) error {
	if hp.Type == nil {
		return nil
	}
	switch *hp.Type {
	case corev1.HostPathDirectoryOrCreate:
		return os.MkdirAll(hp.Path, 0o755)
	case corev1.HostPathDirectory:
		info, err := os.Stat(hp.Path)
		if err == nil && !info.IsDir() {
			return fmt.Errorf("hostPath %s: type Directory, but it is not a directory", hp.Path)
		}
		return err
	}
	return nil
}

func (w *podWorker) writeSecret(ctx context.Context, pod *corev1.Pod, dir, name string, items []corev1.KeyToPath, opt *bool, mode *int32) error {
	secret, err := w.a.client.CoreV1().Secrets(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if optional(opt) {
			return os.MkdirAll(dir, 0o755)
		}
		return fmt.Errorf("secret %s: %w", name, err)
	}
	return writeKeys(dir, secret.Data, items, mode)
}

func (w *podWorker) writeConfigMap(ctx context.Context, pod *corev1.Pod, dir, name string, items []corev1.KeyToPath, opt *bool, mode *int32) error {
	cm, err := w.a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if optional(opt) {
			return os.MkdirAll(dir, 0o755)
		}
		return fmt.Errorf("configmap %s: %w", name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return writeKeys(dir, data, items, mode)
}

// writeKeys writes each key as a file, or only the listed items at their paths.
func writeKeys(dir string, data map[string][]byte, items []corev1.KeyToPath, mode *int32) error {
	fileMode := os.FileMode(0o644)
	if mode != nil {
		fileMode = os.FileMode(*mode)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if len(items) == 0 {
		for k, v := range data {
			if err := os.WriteFile(filepath.Join(dir, k), v, fileMode); err != nil {
				return err
			}
		}
		return nil
	}
	for _, item := range items {
		value, ok := data[item.Key]
		if !ok {
			return fmt.Errorf("items: key %q not found", item.Key)
		}
		m := fileMode
		if item.Mode != nil {
			m = os.FileMode(*item.Mode)
		}
		if err := writeFile(filepath.Join(dir, item.Path), value, m); err != nil {
			return err
		}
	}
	return nil
}

func (w *podWorker) writeDownwardAPI(pod *corev1.Pod, dir string, items []corev1.DownwardAPIVolumeFile, mode *int32) error {
	w.mu.Lock()
	podIP := w.ip
	w.mu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, item := range items {
		var value string
		var err error
		switch {
		case item.FieldRef != nil && item.FieldRef.FieldPath == "metadata.labels":
			value = keyValueLines(pod.Labels)
		case item.FieldRef != nil && item.FieldRef.FieldPath == "metadata.annotations":
			value = keyValueLines(pod.Annotations)
		case item.FieldRef != nil:
			value, err = fieldValue(pod, item.FieldRef.FieldPath, podIP)
		case item.ResourceFieldRef != nil:
			value, err = resourceValue(containerNamed(pod, item.ResourceFieldRef.ContainerName), item.ResourceFieldRef)
		}
		if err != nil {
			return fmt.Errorf("downwardAPI item %s: %w", item.Path, err)
		}
		m := os.FileMode(0o644)
		if item.Mode != nil {
			m = os.FileMode(*item.Mode)
		} else if mode != nil {
			m = os.FileMode(*mode)
		}
		if err := writeFile(filepath.Join(dir, item.Path), []byte(value), m); err != nil {
			return err
		}
	}
	return nil
}

// writeProjected writes each source of a projected volume into the one folder; the
// ServiceAccount admission plugin gives every pod such a volume (token, CA, namespace).
func (w *podWorker) writeProjected(ctx context.Context, pod *corev1.Pod, dir string, p *corev1.ProjectedVolumeSource) error {
	for _, src := range p.Sources {
		var err error
		switch {
		case src.ServiceAccountToken != nil:
			err = w.writeToken(ctx, pod, dir, src.ServiceAccountToken, p.DefaultMode)
		case src.Secret != nil:
			err = w.writeSecret(ctx, pod, dir, src.Secret.Name, src.Secret.Items, src.Secret.Optional, p.DefaultMode)
		case src.ConfigMap != nil:
			err = w.writeConfigMap(ctx, pod, dir, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, p.DefaultMode)
		case src.DownwardAPI != nil:
			err = w.writeDownwardAPI(pod, dir, src.DownwardAPI.Items, p.DefaultMode)
		default:
			err = fmt.Errorf("projected: only serviceAccountToken, secret, configMap and downwardAPI sources are supported")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// writeToken asks the API server for a token bound to this pod, as the kubelet does.
func (w *podWorker) writeToken(ctx context.Context, pod *corev1.Pod, dir string, src *corev1.ServiceAccountTokenProjection, mode *int32) error {
	seconds := int64(defaultTokenSeconds)
	if src.ExpirationSeconds != nil {
		seconds = *src.ExpirationSeconds
	}
	var audiences []string
	if src.Audience != "" {
		audiences = []string{src.Audience}
	}
	account := pod.Spec.ServiceAccountName
	if account == "" {
		account = "default"
	}
	token, err := w.a.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, account, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         audiences,
			ExpirationSeconds: ptr.To(seconds),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("serviceaccount %s token: %w", account, err)
	}
	m := os.FileMode(0o644)
	if mode != nil {
		m = os.FileMode(*mode)
	}
	return writeFile(filepath.Join(dir, src.Path), []byte(token.Status.Token), m)
}

func writeFile(path string, value []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, value, mode)
}

func keyValueLines(m map[string]string) string {
	out := ""
	for k, v := range m {
		out += fmt.Sprintf("%s=%q\n", k, v)
	}
	return out
}

func containerNamed(pod *corev1.Pod, name string) corev1.Container {
	for _, c := range pod.Spec.Containers {
		if c.Name == name || name == "" {
			return c
		}
	}
	return corev1.Container{}
}
