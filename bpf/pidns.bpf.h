/* Process ids as the daemon's pid namespace numbers them. The daemon reads /proc and keys its
 * maps by the pids it sees; in a container those differ from the kernel's global ones, which
 * bpf_get_current_pid_tgid() returns. Set pidns_dev/pidns_ino (from stat of
 * /proc/self/ns/pid) only when the daemon is not in the initial pid namespace. */
#ifndef LEAKWATCH_PIDNS_H
#define LEAKWATCH_PIDNS_H

const volatile __u64 pidns_dev = 0;
const volatile __u64 pidns_ino = 0; /* 0: the initial namespace, global ids are ours */

/* (tgid << 32 | pid) of the current task; 0 when it is not visible in our namespace. */
static __always_inline __u64 current_pid_tgid(void)
{
    if (!pidns_ino)
        return bpf_get_current_pid_tgid();
    struct bpf_pidns_info ns = {};
    if (bpf_get_ns_current_pid_tgid(pidns_dev, pidns_ino, &ns, sizeof(ns)))
        return 0;
    return ((__u64)ns.tgid << 32) | ns.pid;
}

#define LW_MAX_PIDNS_LEVEL 32

/* The tgid of another task (a fork's child) in our namespace; 0 when not visible there. */
static __always_inline __u32 task_tgid_in_ns(struct task_struct *t)
{
    if (!pidns_ino)
        return BPF_CORE_READ(t, tgid);
    struct pid *p = BPF_CORE_READ(t, group_leader, thread_pid);
    if (!p)
        return 0;
    unsigned int level = BPF_CORE_READ(p, level);
    for (unsigned int i = 0; i <= LW_MAX_PIDNS_LEVEL; i++) {
        if (i > level)
            break;
        struct upid up = {};
        if (bpf_core_read(&up, sizeof(up), &p->numbers[i]))
            return 0;
        if (up.ns && BPF_CORE_READ(up.ns, ns.inum) == pidns_ino)
            return up.nr;
    }
    return 0;
}

#endif
