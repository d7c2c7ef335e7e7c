package replconn

import "testing"

func TestParseSegmentSize(t *testing.T) {
	for in, want := range map[string]uint64{"1MB": 1 << 20, "16MB": 16 << 20, "1GB": 1 << 30, "64MB": 64 << 20} {
		if got, err := ParseSegmentSize(in); err != nil || got != want {
			t.Errorf("%s: %d %v", in, got, err)
		}
	}
	for _, in := range []string{"", "MB", "16XB", "x16MB", "3MB", "512kB", "2GB"} {
		if _, err := ParseSegmentSize(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}
