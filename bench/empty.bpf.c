/* Empty probes for the overhead floor (bench/floor.c): the cost of a uprobe, uretprobe or
 * session uprobe that does nothing, on the same functions leakwatchd probes. */
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

/* A session uprobe (6.13+; floor.c sets its attach type): run at entry and, unless the entry
 * returns 1, at the return. The cookie's bit 0 says to skip the return (free), as leakwatchd's
 * session probe does for a call it records nothing of. */
SEC("uprobe")
int empty_session(struct pt_regs *ctx)
{
    return bpf_get_attach_cookie(ctx) & 1;
}
