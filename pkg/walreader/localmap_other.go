//go:build !linux

package walreader

import "os"

// segMap maps nothing outside Linux: senders copy from the file instead.
type segMap struct {
	maps *SegmentMaps
	any  bool
}

func (*segMap) mapFile(*os.File, uint64, uint64, bool) {}
func (*segMap) unmap()                                 {}
func (*segMap) resident(int64, int) []byte             { return nil }

func fileIdentity(*os.File) (fileID, int64, bool) { return fileID{}, 0, false }
func mapSegment(*os.File, int64) ([]byte, bool)   { return nil, false }
func unmapSegment([]byte)                         {}
