//! The default seccomp profile of OCI pods: an allow-list, as containerd's and Docker's
//! RuntimeDefault are. A syscall not on it fails with EPERM, so one the kernel adds later is
//! refused until it is looked at; `clone` may not make namespaces (the flags are masked), and
//! `clone3`, whose flags sit where seccomp cannot read them, answers ENOSYS so the C library
//! falls back to `clone`. Left off: kernel modules, mounts and the new mount API (`fsopen`,
//! `move_mount`, `open_tree`, ...), namespaces (`unshare`, `setns`), io_uring, clocks,
//! reboot, swap, keyrings, BPF, perf, tracing other processes (`ptrace`, `process_vm_*`,
//! `pidfd_getfd`), NUMA policy, `userfaultfd`, quotas and handle-based opens.
//!
//! The names come from the kernel's syscall tables for x86-64, i386 and the generic table
//! (arm64), plus 32-bit ARM's own; runc skips names its libseccomp does not know for an
//! architecture.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscallBuilder,
};
use oci_spec::OciSpecError;

/// The clone flags that make new namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET): a container's `clone` with any of them is refused.
const NAMESPACE_FLAGS: u64 = 0x7E02_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Syscalls a container may make without asking for more (366 names).
pub const ALLOWED_SYSCALLS: &[&str] = &[
    "_llseek",
    "accept",
    "accept4",
    "access",
    "alarm",
    "arch_prctl",
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "bind",
    "breakpoint",
    "brk",
    "cacheflush",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "chroot",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "nice",
    "oldfstat",
    "oldlstat",
    "oldolduname",
    "oldstat",
    "olduname",
    "open",
    "openat",
    "openat2",
    "pause",
    "personality",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_madvise",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readdir",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "set_tls",
    "setdomainname",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "sethostname",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "sgetmask",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaction",
    "sigaltstack",
    "signal",
    "signalfd",
    "signalfd4",
    "sigpending",
    "sigprocmask",
    "sigreturn",
    "sigsuspend",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "ssetmask",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "sync_file_range2",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// The filter: the allow-list, `clone` without namespace flags, `clone3` as ENOSYS, and EPERM
/// for everything else.
/// The largest Localhost profile read: Docker's default, the largest in common use, is 20 KiB.
const MAX_PROFILE: u64 = 1 << 20;

/// A Localhost profile: the node's file at `path`, the OCI runtime spec's seccomp object
/// (Docker's profile format, less its `archMap` and conditional `includes`, which are not
/// read). The error names the file and what is wrong with it.
pub fn localhost(path: &std::path::Path) -> Result<LinuxSeccomp, String> {
    use std::io::Read;
    let named = |e: &dyn std::fmt::Display| format!("seccomp profile {}: {e}", path.display());
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PROFILE + 1).read_to_end(&mut text))
        .map_err(|e| named(&e))?;
    if text.len() as u64 > MAX_PROFILE {
        return Err(named(&format!("larger than {MAX_PROFILE} bytes")));
    }
    serde_json::from_slice(&text).map_err(|e| named(&e))
}

pub fn profile() -> Result<LinuxSeccomp, OciSpecError> {
    let names = |n: &[&str]| n.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let no_namespaces = LinuxSeccompArgBuilder::default()
        .index(0usize)
        .value(NAMESPACE_FLAGS)
        .value_two(0u64)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()?;
    let syscalls = vec![
        LinuxSyscallBuilder::default()
            .names(names(ALLOWED_SYSCALLS))
            .action(LinuxSeccompAction::ScmpActAllow)
            .build()?,
        LinuxSyscallBuilder::default()
            .names(names(&["clone"]))
            .action(LinuxSeccompAction::ScmpActAllow)
            .args(vec![no_namespaces])
            .build()?,
        LinuxSyscallBuilder::default()
            .names(names(&["clone3"]))
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(ENOSYS)
            .build()?,
    ];
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
            Arch::ScmpArchAarch64,
            Arch::ScmpArchArm,
        ])
        .syscalls(syscalls)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_allows_what_programs_need_and_nothing_that_escapes() {
        let needed = [
            "read",
            "write",
            "openat",
            "execve",
            "futex",
            "mmap",
            "exit_group",
        ];
        for name in needed
            .iter()
            .chain(&["rt_sigreturn", "socket", "epoll_wait", "wait4"])
        {
            assert!(ALLOWED_SYSCALLS.contains(name), "{name}");
        }
        let escapes = [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "fsopen",
            "move_mount",
        ];
        let more = [
            "open_tree",
            "io_uring_setup",
            "bpf",
            "ptrace",
            "init_module",
            "kexec_load",
        ];
        let rest = ["keyctl", "userfaultfd", "clone", "clone3"];
        for name in escapes.iter().chain(&more).chain(&rest) {
            assert!(!ALLOWED_SYSCALLS.contains(name), "{name}");
        }
        let p = serde_json::to_value(profile().expect("profile")).expect("serializes");
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["syscalls"][1]["args"][0]["value"], NAMESPACE_FLAGS);
        assert_eq!(p["syscalls"][2]["errnoRet"], ENOSYS);
    }
}
