package agent

import (
	"testing"
	"time"
)

func TestFormatEntryJoinsPartialLinesAndFiltersBySince(t *testing.T) {
	full := "2026-01-02T03:04:05.5Z stdout F hello world\n"
	partial := "2026-01-02T03:04:05.5Z stdout P hel\n"

	if got, ok := formatEntry(full, logQuery{}); !ok || got != "hello world\n" {
		t.Errorf("full line = %q, %v; want the text with its newline", got, ok)
	}
	if got, _ := formatEntry(partial, logQuery{}); got != "hel" {
		t.Errorf("partial line = %q; want the text without newline", got)
	}
	if got, _ := formatEntry(full, logQuery{timestamps: true}); got != "2026-01-02T03:04:05.5Z hello world\n" {
		t.Errorf("with timestamps = %q", got)
	}
	since := time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC)
	if _, ok := formatEntry(full, logQuery{since: since}); ok {
		t.Error("an entry older than sinceTime was kept")
	}
}
