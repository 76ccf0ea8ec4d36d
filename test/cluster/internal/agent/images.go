package agent

import (
	"fmt"
	"os"
	"path"
	"strings"

	"sigs.k8s.io/yaml"
)

// Image is what an image name runs as on this machine: an entry of images.yaml.
type Image struct {
	Match      string   `json:"match"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
}

// ImageTable maps image names to local programs, first match wins.
type ImageTable struct {
	entries []Image
}

// LoadImageTable reads images.yaml and substitutes <repo> with the repository root.
func LoadImageTable(file, repo string) (*ImageTable, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Images []Image `json:"images"`
	}
	if err := yaml.UnmarshalStrict(raw, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	subst := func(values []string) []string {
		out := make([]string, len(values))
		for i, v := range values {
			out[i] = strings.ReplaceAll(v, "<repo>", repo)
		}
		return out
	}
	for i, img := range doc.Images {
		if _, err := path.Match(img.Match, ""); err != nil {
			return nil, fmt.Errorf("%s: images[%d].match: bad pattern %q: %w", file, i, img.Match, err)
		}
		doc.Images[i].Entrypoint = subst(img.Entrypoint)
		doc.Images[i].Cmd = subst(img.Cmd)
		doc.Images[i].WorkingDir = strings.ReplaceAll(img.WorkingDir, "<repo>", repo)
	}
	return &ImageTable{entries: doc.Images}, nil
}

// Resolve finds the entry for an image, or says which name found none.
func (t *ImageTable) Resolve(image string) (Image, error) {
	name := normalizeImage(image)
	for _, img := range t.entries {
		if ok, _ := path.Match(img.Match, name); ok {
			return img, nil
		}
	}
	return Image{}, fmt.Errorf("image %q (as %q): no entry of images.yaml matches it", image, name)
}

func normalizeImage(image string) string {
	name := strings.TrimPrefix(strings.TrimPrefix(image, "docker.io/"), "library/")
	if at := strings.IndexByte(name, '@'); at >= 0 {
		name = name[:at]
	}
	lastSlash := strings.LastIndexByte(name, '/')
	if !strings.Contains(name[lastSlash+1:], ":") {
		name += ":latest"
	}
	return name
}
