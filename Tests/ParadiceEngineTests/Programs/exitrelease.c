/* A forked child opens a forwarded device and exits; when the parent's waitpid returns, the backend must
 * already hold no descriptor for it, as a local exit closes the child's descriptors before the wait ends.
 * Usage: exitrelease BACKEND_PID DEVICE */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The backend's descriptors for device files (its sockets come and go on their own schedule). */
static int devices(const char *pid) {
    char folder[64], link[128], target[256];
    snprintf(folder, sizeof folder, "/proc/%s/fd", pid);
    DIR *d = opendir(folder);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        snprintf(link, sizeof link, "%s/%s", folder, e->d_name);
        ssize_t length = readlink(link, target, sizeof target - 1);
        if (length > 0) { target[length] = 0; if (!strncmp(target, "/dev/", 5)) n++; }
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int before = devices(argv[1]);
    for (int round = 0; round < 20; round++) {
        pid_t child = fork();
        if (child == 0) {
            int fd = open(argv[2], O_RDWR | O_NOCTTY);
            if (fd < 0) { perror("open"); _exit(3); }
            exit(devices(argv[1]) > before ? 0 : 4);   /* exit(), not _exit(): atexit work runs */
        }
        int status;
        waitpid(child, &status, 0);
        int after = devices(argv[1]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || after != before) {
            printf("round %d: child status %d, backend device descriptors %d before, %d after the wait\n",
                   round, WEXITSTATUS(status), before, after);
            return 1;
        }
    }
    printf("released at every exit\n");
    return 0;
}
