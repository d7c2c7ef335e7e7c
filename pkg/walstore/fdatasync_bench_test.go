package walstore

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkFdatasync is one 8 KiB WAL write followed by fdatasync, as a
// synchronous commit costs, into a file that grows with each write
// (append: the fdatasync also commits the new size), into a fallocated
// file (no size change, but the written blocks' extents go from unwritten
// to written, a metadata change too) and into a zero-filled one (as
// PostgreSQL's walreceiver writes: only data is written back).
func BenchmarkFdatasync(b *testing.B) {
	const size = 16 << 20
	for _, mode := range []string{"append", "fallocated", "zerofilled"} {
		b.Run(mode, func(b *testing.B) {
			dir := b.TempDir()
			buf := make([]byte, 8<<10)
			for i := range buf {
				buf[i] = byte(i)
			}
			var f *os.File
			n := 0
			open := func() {
				if f != nil {
					f.Close()
				}
				n++
				var err error
				f, err = os.OpenFile(filepath.Join(dir, "seg"+string(rune('a'+n%26))), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					b.Fatal(err)
				}
				switch mode {
				case "fallocated":
					err = allocate(f, size)
				case "zerofilled":
					err = writeZeros(f, size)
				}
				if err == nil {
					err = f.Sync()
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			open()
			b.StartTimer()
			off := int64(0)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if off+int64(len(buf)) > size {
					b.StopTimer()
					open()
					off = 0
					b.StartTimer()
				}
				if _, err := f.WriteAt(buf, off); err != nil {
					b.Fatal(err)
				}
				if err := fdatasync(f, true); err != nil {
					b.Fatal(err)
				}
				off += int64(len(buf))
			}
			b.StopTimer()
			f.Close()
		})
	}
}
