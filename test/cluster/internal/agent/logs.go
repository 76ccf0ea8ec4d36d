package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// logFile is a container's log in the CRI format the kubelet reads
// ("<RFC3339Nano time> <stream> F <line>"), so timestamps and sinceTime work.
type logFile struct {
	mu      sync.Mutex
	f       *os.File
	streams []*lineWriter
}

func openLogFile(path string) (*logFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return &logFile{f: f}, nil
}

// stream is a writer for stdout or stderr that turns each line into one log entry.
func (l *logFile) stream(name string) io.Writer {
	w := &lineWriter{log: l, stream: name}
	l.streams = append(l.streams, w)
	return w
}

// Close writes a last line that had no newline as a partial entry, as CRI runtimes do, so
// the log ends without a newline that the process never wrote; then it closes the file.
func (l *logFile) Close() error {
	for _, w := range l.streams {
		if len(w.pending) > 0 {
			l.write(w.stream, w.pending, true)
			w.pending = nil
		}
	}
	return l.f.Close()
}

func (l *logFile) write(stream string, line []byte, partial bool) {
	tag := "F"
	if partial {
		tag = "P"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.f, "%s %s %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), stream, tag, line)
}

// maxLine is where a line without newline is cut into a partial entry, as CRI runtimes do.
const maxLine = 16 * 1024

type lineWriter struct {
	log     *logFile
	stream  string
	pending []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.pending = append(w.pending, p...)
	for {
		i := bytes.IndexByte(w.pending, '\n')
		if i < 0 {
			break
		}
		w.log.write(w.stream, w.pending[:i], false)
		w.pending = w.pending[i+1:]
	}
	for len(w.pending) >= maxLine {
		w.log.write(w.stream, w.pending[:maxLine], true)
		w.pending = w.pending[maxLine:]
	}
	return len(p), nil
}

// startLogServer serves the kubelet's container-log endpoint over HTTPS to clients holding a
// certificate of the cluster CA: the API server proxies `kubectl logs` here.
//
// TODO: any certificate of the cluster CA may read logs; the kubelet would also ask the API
// server (SubjectAccessReview) whether that identity may read nodes/log.
func (a *Agent) startLogServer() (io.Closer, error) {
	pair, err := tls.LoadX509KeyPair(a.cfg.TLSCertFile, a.cfg.TLSKeyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(a.cfg.ClientCAFile)
	if err != nil {
		return nil, err
	}
	clientCAs := x509.NewCertPool()
	if !clientCAs.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("--client-ca-file %s: no certificate in it", a.cfg.ClientCAFile)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", a.serveContainerLogs)
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) { _, _ = rw.Write([]byte("ok")) })
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", a.cfg.Port))
	if err != nil {
		return nil, err
	}
	server := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{pair},
			ClientCAs:    clientCAs,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		},
	}
	go func() {
		if err := server.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("log server stopped", "error", err.Error())
		}
	}()
	return server, nil
}

// logQuery is the subset of the kubelet's log options that kubectl sends.
type logQuery struct {
	follow     bool
	previous   bool
	timestamps bool
	tailLines  int // -1: all
	limitBytes int // 0: no limit
	since      time.Time
}

func parseLogQuery(r *http.Request) (logQuery, error) {
	q := r.URL.Query()
	out := logQuery{tailLines: -1}
	out.follow = q.Get("follow") == "true"
	out.previous = q.Get("previous") == "true"
	out.timestamps = q.Get("timestamps") == "true"
	var err error
	if v := q.Get("tailLines"); v != "" {
		if out.tailLines, err = strconv.Atoi(v); err != nil || out.tailLines < 0 {
			return out, fmt.Errorf("tailLines: want a number >= 0, got %q", v)
		}
	}
	if v := q.Get("limitBytes"); v != "" {
		if out.limitBytes, err = strconv.Atoi(v); err != nil || out.limitBytes < 1 {
			return out, fmt.Errorf("limitBytes: want a number >= 1, got %q", v)
		}
	}
	if v := q.Get("sinceSeconds"); v != "" {
		seconds, convErr := strconv.Atoi(v)
		if convErr != nil {
			return out, fmt.Errorf("sinceSeconds: want a number, got %q", v)
		}
		out.since = time.Now().Add(-time.Duration(seconds) * time.Second)
	}
	if v := q.Get("sinceTime"); v != "" {
		if out.since, err = time.Parse(time.RFC3339, v); err != nil {
			return out, fmt.Errorf("sinceTime: want RFC 3339, got %q", v)
		}
	}
	return out, nil
}

func (a *Agent) serveContainerLogs(rw http.ResponseWriter, r *http.Request) {
	query, err := parseLogQuery(r)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	w := a.workerByName(r.PathValue("namespace"), r.PathValue("pod"))
	if w == nil {
		http.Error(rw, fmt.Sprintf("pod %s/%s: not running on this node", r.PathValue("namespace"), r.PathValue("pod")), http.StatusNotFound)
		return
	}
	c := w.containerNamed(r.PathValue("container"))
	if c == nil {
		http.Error(rw, fmt.Sprintf("container %q: not in pod %s", r.PathValue("container"), w.key()), http.StatusNotFound)
		return
	}
	w.mu.Lock()
	restarts, running, started := c.restarts, c.cmd != nil, c.started
	w.mu.Unlock()
	if query.previous {
		if restarts == 0 {
			http.Error(rw, fmt.Sprintf("previous terminated container %q in pod %s: not found", c.spec.Name, w.key()), http.StatusBadRequest)
			return
		}
		restarts--
		running = false
	}
	if !started {
		http.Error(rw, fmt.Sprintf("container %q in pod %s is waiting to start", c.spec.Name, w.key()), http.StatusBadRequest)
		return
	}
	rw.Header().Set("Content-Type", "text/plain")
	a.copyLog(r.Context(), rw, c, restarts, query, query.follow && running)
}

// copyLog writes the log entries that pass the query; with follow it keeps reading as the file
// grows until the container's run ends or the client goes away.
func (a *Agent) copyLog(ctx context.Context, rw http.ResponseWriter, c *container, restarts int32, q logQuery, follow bool) {
	f, err := os.Open(c.logPath(restarts))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusNotFound)
		return
	}
	defer f.Close()
	reader := bufio.NewReader(f)
	var lines []string
	for {
		line, err := reader.ReadString('\n')
		if err != nil {
			break
		}
		if out, ok := formatEntry(line, q); ok {
			lines = append(lines, out)
		}
	}
	if q.tailLines >= 0 && len(lines) > q.tailLines {
		lines = lines[len(lines)-q.tailLines:]
	}
	written := 0
	emit := func(s string) bool {
		if q.limitBytes > 0 && written+len(s) > q.limitBytes {
			s = s[:q.limitBytes-written]
		}
		n, _ := io.WriteString(rw, s)
		written += n
		return q.limitBytes == 0 || written < q.limitBytes
	}
	for _, s := range lines {
		if !emit(s) {
			return
		}
	}
	if !follow {
		return
	}
	flusher, _ := rw.(http.Flusher)
	c.w.mu.Lock()
	exited := c.exited
	c.w.mu.Unlock()
	partial := ""
	for {
		if flusher != nil {
			flusher.Flush()
		}
		chunk, err := reader.ReadString('\n')
		partial += chunk
		if err == nil {
			if out, ok := formatEntry(partial, q); ok && !emit(out) {
				return
			}
			partial = ""
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-exited:
			// Drain what the run wrote last, then stop.
			if rest, _ := io.ReadAll(reader); len(rest) > 0 {
				for _, line := range strings.SplitAfter(partial+string(rest), "\n") {
					if out, ok := formatEntry(line, q); ok && !emit(out) {
						return
					}
				}
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// formatEntry turns one CRI log line into what kubectl shows, or false when filtered out.
func formatEntry(line string, q logQuery) (string, bool) {
	line = strings.TrimSuffix(line, "\n")
	parts := strings.SplitN(line, " ", 4)
	if len(parts) < 4 {
		return "", false
	}
	ts, err := time.Parse(time.RFC3339Nano, parts[0])
	if err != nil || (!q.since.IsZero() && ts.Before(q.since)) {
		return "", false
	}
	text := parts[3]
	if parts[2] == "F" {
		text += "\n"
	}
	if q.timestamps {
		text = parts[0] + " " + text
	}
	return text, true
}

func (w *podWorker) containerNamed(name string) *container {
	for _, c := range append(append([]*container{}, w.initStatus...), w.containers...) {
		if c.spec.Name == name {
			return c
		}
	}
	return nil
}
