//go:build !linux

package walreader

import "os"

// segMap maps nothing outside Linux: senders copy from the file instead.
type segMap struct{ any bool }

func (*segMap) mapFile(*os.File, uint64)   {}
func (*segMap) unmap()                     {}
func (*segMap) resident(int64, int) []byte { return nil }
