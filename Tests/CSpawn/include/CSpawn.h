#ifndef COORDINATE_CSPAWN_H
#define COORDINATE_CSPAWN_H

#include <sys/types.h>

/// What `coordinate_spawn` starts and how.
typedef struct {
    /// Absolute path of the program (no PATH search).
    const char *path;
    /// NULL-terminated argument vector, argv[0] included.
    char *const *argv;
    /// NULL-terminated environment.
    char *const *envp;
    /// Descriptors that become the child's 0, 1 and 2. Each must be above 2 (a pipe end, /dev/null).
    int stdin_fd;
    int stdout_fd;
    int stderr_fd;
    /// When non-zero, the signal the child receives when the thread that spawned it ends
    /// (PR_SET_PDEATHSIG). The caller spawns from a thread that lives as long as the process.
    int parent_death_signal;
    /// When non-zero, the child leads a new process group (its pid), so a signal to the group reaches
    /// everything it starts.
    int new_process_group;
} coordinate_spawn_options;

/// Starts a program with a clean slate: default signal dispositions, an empty signal mask, only descriptors
/// 0-2 open (whatever else the parent has open, close-on-exec or not), optionally a parent-death signal.
/// Returns 0 and the pid in `*pid`, or the errno of what failed (exec included) with no child left behind.
int coordinate_spawn(const coordinate_spawn_options *options, pid_t *pid);

/// pipe2(fds, O_CLOEXEC): a pipe whose ends no child inherits unless it is given them explicitly.
int coordinate_cloexec_pipe(int fds[2]);

#endif
