// Process launching for the tests (and anything else that needs a child with a parent-death signal).
//
// Why not posix_spawn or Foundation's Process: neither can set PR_SET_PDEATHSIG, which is what makes a test's
// daemons die with a crashed test process; and Foundation's Process registers run-loop sources on the calling
// thread, which on Swift's cooperative pool is a thread it does not own.
//
// The child is made with fork(2) semantics from vfork(2): between vfork and execve it only makes system calls
// that touch nothing but its own stack (the parent is suspended meanwhile and shares its memory). Signals are
// blocked across the vfork so that no handler of the parent's ever runs in the child; the child then resets
// every disposition to the default and unblocks before exec. An exec failure is reported through a
// close-on-exec pipe, which also works where a sanitizer turns vfork into fork.
#define _GNU_SOURCE
#include "CSpawn.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

static void close_from(int lowest) {
    if (syscall(SYS_close_range, (unsigned)lowest, ~0U, 0) == 0) return;
    // Kernels before 5.9: close every possible descriptor up to a sane bound.
    struct rlimit limit;
    int highest = 65536;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < 65536) {
        highest = (int)limit.rlim_cur;
    }
    for (int fd = lowest; fd < highest; fd++) close(fd);
}

static void __attribute__((noreturn)) child_fail(int report_fd) {
    int code = errno;
    ssize_t ignored = write(report_fd, &code, sizeof code);
    (void)ignored;
    _exit(127);
}

int coordinate_spawn(const coordinate_spawn_options *options, pid_t *pid) {
    if (options->stdin_fd <= 2 || options->stdout_fd <= 2 || options->stderr_fd <= 2) return EINVAL;
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return errno;

    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pid_t parent = getpid();
    pid_t child = vfork();
    if (child == 0) {
        struct sigaction defaults;
        memset(&defaults, 0, sizeof defaults);
        defaults.sa_handler = SIG_DFL;
        for (int signal = 1; signal < NSIG; signal++) {
            if (signal != SIGKILL && signal != SIGSTOP) sigaction(signal, &defaults, NULL);
        }
        if (options->parent_death_signal != 0) {
            if (prctl(PR_SET_PDEATHSIG, options->parent_death_signal) != 0) child_fail(report[1]);
            // The parent may have died before the prctl: then nobody would ever send the signal.
            if (getppid() != parent) _exit(127);
        }
        if (options->new_process_group != 0 && setpgid(0, 0) != 0) child_fail(report[1]);
        if (dup2(options->stdin_fd, 0) < 0 || dup2(options->stdout_fd, 1) < 0 || dup2(options->stderr_fd, 2) < 0) {
            child_fail(report[1]);
        }
        // Keep the report pipe (close-on-exec) past the sweep: move it to 3 and close everything above.
        if (report[1] != 3) {
            if (dup3(report[1], 3, O_CLOEXEC) < 0) child_fail(report[1]);
        }
        close_from(4);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(options->path, options->argv, options->envp);
        child_fail(3);
    }
    int spawn_error = child < 0 ? errno : 0;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    close(report[1]);
    if (spawn_error != 0) {
        close(report[0]);
        return spawn_error;
    }
    int exec_error = 0;
    ssize_t count;
    do {
        count = read(report[0], &exec_error, sizeof exec_error);
    } while (count < 0 && errno == EINTR);
    close(report[0]);
    if (count == (ssize_t)sizeof exec_error) {
        int status;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
        return exec_error != 0 ? exec_error : ECHILD;
    }
    *pid = child;
    return 0;
}

int coordinate_cloexec_pipe(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
