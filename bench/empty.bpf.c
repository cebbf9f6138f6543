/* Empty probes for the overhead floor (bench/floor.c): the cost of a uprobe or uretprobe
 * that does nothing, on the same functions leakwatchd probes. */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("uprobe")
int empty_malloc(struct pt_regs *ctx)
{
    return 0;
}

SEC("uprobe")
int empty_free(struct pt_regs *ctx)
{
    return 0;
}

SEC("uretprobe")
int empty_malloc_return(struct pt_regs *ctx)
{
    return 0;
}
