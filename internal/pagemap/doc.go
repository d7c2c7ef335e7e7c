// Package pagemap answers, for this process's own memory, whether a 2 MiB
// region of a mapping is mapped with one huge page table entry: the
// PAGEMAP_SCAN ioctl of /proc/self/pagemap (Linux 6.7 on). The WAL
// writer uses it to check that refolding a segment pays, and the local
// WAL tier to hand out mapped bytes only where they are cheap to send.
// Elsewhere, and on older kernels, the answer is always no.
package pagemap
