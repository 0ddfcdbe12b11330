package journal

import (
	"os"

	"golang.org/x/sys/unix"
)

// allocate gives f size bytes of disk blocks, falling back to a sparse file
// where the filesystem cannot allocate ahead.
func allocate(f *os.File, size int64) error {
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err == nil {
		return nil
	}
	return f.Truncate(size)
}
