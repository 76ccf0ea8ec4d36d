package agent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestPathRewriterMapsMountPathsInsideScriptsOnly(t *testing.T) {
	c := &container{spec: corev1.Container{VolumeMounts: []corev1.VolumeMount{
		{Name: "config", MountPath: "/etc/config"},
		{Name: "deep", MountPath: "/etc/config/deep"},
	}}}
	rewrite := c.pathRewriter("/pods/u/root")
	cases := map[string]string{
		"/etc/config":                        "/pods/u/root/etc/config",
		"cat /etc/config/a; ls /etc/config":  "cat /pods/u/root/etc/config/a; ls /pods/u/root/etc/config",
		"--config=/etc/config/deep/x.yaml":   "--config=/pods/u/root/etc/config/deep/x.yaml",
		"/etc/configuration /usr/etc/config": "/etc/configuration /usr/etc/config",
	}
	// The root may itself start with a mount path; the rewritten text is never read again.
	work := &container{spec: corev1.Container{VolumeMounts: []corev1.VolumeMount{{Name: "w", MountPath: "/work"}}}}
	if got := work.pathRewriter("/work/run/root")("echo x > /work/ready"); got != "echo x > /work/run/root/work/ready" {
		t.Errorf("rewrite with a root under the mount path = %q", got)
	}
	for in, want := range cases {
		if got := rewrite(in); got != want {
			t.Errorf("rewrite(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExpandFollowsKubeletRules(t *testing.T) {
	env := []envVar{{"POD_IP", "127.0.10.2"}, {"PORT", "7443"}}
	cases := map[string]string{
		"$(POD_IP):$(PORT)": "127.0.10.2:7443",
		"$(MISSING)":        "$(MISSING)",
		"$$(POD_IP)":        "$(POD_IP)",
		"pid $$$$":          "pid $$",
		"$HOME":             "$HOME",
	}
	for in, want := range cases {
		if got := expand(in, env); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}
